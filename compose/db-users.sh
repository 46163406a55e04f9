# shellcheck shell=bash
# One database user per role, each with its own password, on a new primary (auth-db, each shard's
# primary). The mariadb image's entrypoint sources this file (mode 0644: not executed, so it has
# the entrypoint's docker_process_sql) once, when the data folder is new, after it has made
# MARIADB_DATABASE and before the server takes TCP connections. The statements are written to the
# binary log, so a replica attached to this primary replays them and has the same users, roles and
# grants; it is never mounted on a replica. The passwords come from the container's environment,
# where compose.yaml maps each instance's own variables onto these names:
#
#   DB_MIGRATOR_PASSWORD   migrator: ALL on the database WITH GRANT OPTION (the schema's grants to
#                          the reader role), nothing global. `shopctl migrate` alone.
#   DB_SHOP_PASSWORD       shop: SELECT, INSERT, UPDATE, DELETE on the database. The service.
#   DB_SHOP_READS_BINLOG   "1" on a shard primary: shop may also follow the binlog, as a bucket
#                          move does (REPLICATION SLAVE, BINLOG MONITOR; the server holds this
#                          shard's database alone).
#   DB_BACKEND_PASSWORD    auth only: backend, with the role shop_auth_reader as its default. The
#                          auth schema's migration grants the role its SELECTs, so the role is made
#                          here, before `shopctl migrate` runs.
#   DB_BACKUP_PASSWORD     backup: the binlog archiver (`shopctl backup archive`): REPLICATION SLAVE
#                          and BINLOG MONITOR to read the binlog, BINLOG ADMIN to purge what it
#                          has archived; no right on any table.
#   DB_REPL_PASSWORD       repl: REPLICATION SLAVE, from each address in DB_REPL_HOSTS (the
#   DB_REPL_HOSTS          replicas' fixed addresses; the image resolves no names, so a host
#                          part must be an address).
#
# Passwords are quoted as SQL strings here; they also go into URLs unescaped, so compose.yaml's
# header has them made of hex digits.
shop_db_users() {
  local db grant_db sql host
  # Checked here, not inside the $(…) below, where a missing one would only end a subshell.
  db=${MARIADB_DATABASE:?compose/db-users.sh: MARIADB_DATABASE is not set}
  : "${DB_MIGRATOR_PASSWORD:?compose/db-users.sh: DB_MIGRATOR_PASSWORD is not set}"
  : "${DB_SHOP_PASSWORD:?compose/db-users.sh: DB_SHOP_PASSWORD is not set}"
  # `_` is a wildcard in a database grant.
  grant_db=${db//_/\\_}
  # 'value', escaped as the image escapes its own passwords.
  shop_db_quote() { printf "'%s'" "$(docker_sql_escape_string_literal "$1")"; }

  sql="CREATE USER 'migrator'@'%' IDENTIFIED BY $(shop_db_quote "$DB_MIGRATOR_PASSWORD");
GRANT ALL PRIVILEGES ON \`$grant_db\`.* TO 'migrator'@'%' WITH GRANT OPTION;
CREATE USER 'shop'@'%' IDENTIFIED BY $(shop_db_quote "$DB_SHOP_PASSWORD");
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$grant_db\`.* TO 'shop'@'%';"
  if [ "${DB_SHOP_READS_BINLOG:-}" = 1 ]; then
    sql+="
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'shop'@'%';"
  fi
  if [ -n "${DB_BACKEND_PASSWORD:-}" ]; then
    sql+="
CREATE ROLE shop_auth_reader;
CREATE USER 'backend'@'%' IDENTIFIED BY $(shop_db_quote "$DB_BACKEND_PASSWORD");
GRANT shop_auth_reader TO 'backend'@'%';
SET DEFAULT ROLE shop_auth_reader FOR 'backend'@'%';"
  fi
  if [ -n "${DB_BACKUP_PASSWORD:-}" ]; then
    sql+="
CREATE USER 'backup'@'%' IDENTIFIED BY $(shop_db_quote "$DB_BACKUP_PASSWORD");
GRANT REPLICATION SLAVE, BINLOG MONITOR, BINLOG ADMIN ON *.* TO 'backup'@'%';"
  fi
  if [ -n "${DB_REPL_PASSWORD:-}" ]; then
    [ -n "${DB_REPL_HOSTS:-}" ] || { echo "compose/db-users.sh: DB_REPL_PASSWORD without DB_REPL_HOSTS" >&2; return 1; }
    for host in $DB_REPL_HOSTS; do
      [[ $host =~ ^[0-9a-fA-F.:]+$ ]] || { echo "compose/db-users.sh: DB_REPL_HOSTS: $host is not an address" >&2; return 1; }
      sql+="
CREATE USER 'repl'@'$host' IDENTIFIED BY $(shop_db_quote "$DB_REPL_PASSWORD");
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'$host';"
    done
  fi
  mysql_note "compose/db-users.sh: users migrator, shop${DB_BACKEND_PASSWORD:+, backend}${DB_BACKUP_PASSWORD:+, backup}${DB_REPL_PASSWORD:+, repl} on $db"
  docker_process_sql --binary-mode <<<"$sql"
  unset -f shop_db_quote
}
shop_db_users
unset -f shop_db_users
