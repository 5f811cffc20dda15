# Managed by coophost: mail rspamd marked as spam goes to Junk, before the member's own rules.
require ["fileinto", "mailbox"];
if header :is "X-Spam" "Yes" {
  fileinto :create "Junk";
  stop;
}
