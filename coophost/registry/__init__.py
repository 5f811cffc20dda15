"""The co-op registry: coop.yml, hosts.yml and members/*.yml, loaded, validated and edited.

Modules: `checks` (allowlists), `yamlio` (safe reads, round-trip writes), `parse` (records from
data), `loader` (a directory, with the parse cache), `edit` (locked, atomic, comment-keeping
writes).
"""
