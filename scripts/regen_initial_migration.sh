#!/usr/bin/env bash
# Until the first release the schema is one revision (0001); regenerate it from the models.
# After a release, add a new revision instead: alembic -c <ini> revision --autogenerate.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
cat > "$tmp/alembic.ini" <<INI
[alembic]
script_location = $PWD/migrations
sqlalchemy.url = sqlite:///$tmp/autogen.db
INI
rm -f migrations/versions/0001_initial_schema.py
.venv/bin/alembic -c "$tmp/alembic.ini" revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
sed -i 's/^Create Date: .*/Create Date: (regenerated before the first release)/' migrations/versions/0001_initial_schema.py
rm -rf "$tmp"
echo "migrations/versions/0001_initial_schema.py regenerated"
