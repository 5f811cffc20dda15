"""The co-op registry: coop.yml, hosts.yml and members/*.yml, loaded, validated, placed, edited.

Modules: `checks` (allowlists), `yamlio` (safe reads, YAML 1.2, round-trip writes), `model`
(the records), `parse` (records from data), `catalogue` (the services' entries), `hosts` (the
hosts.yml reader), `placement` (which host runs a unit), `cache` and `loader` (a co-op directory,
read once), `edit` (atomic, comment-keeping writes that refuse a file changed since it was
read), `init` (a new co-op directory).
"""
