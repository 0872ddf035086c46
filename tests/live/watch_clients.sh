#!/bin/sh
# The article's setup, for the watch tests: `ncat -l PORT` (with -k when there
# are several clients; its stdin stays open, as in a terminal), N copies of the
# article's client, then the server goes away (SIGTERM: a background job of a
# script ignores SIGINT) while the clients sleep, and they write twice.
#     watch_clients.sh CLIENT PORT N [PAUSE_S [GAP_S]]
set -u
client=$1 port=$2 n=$3 pause=${4:-2} gap=${5:-0.3}
keep=""
[ "$n" -gt 1 ] && keep="-k"
wait_for() { # wait_for COUNT STATE-FILTER: until ss lists COUNT sockets on the port
    i=0
    while [ "$(ss -Htn $2 "( sport = :$port or dport = :$port )" | wc -l)" -lt "$1" ] && [ $i -lt 100 ]; do
        sleep 0.1; i=$((i + 1))
    done
}
sleep 600 | ncat -l $keep "$port" >/dev/null &
server=$!  # the pipeline's last command: ncat
wait_for 1 "state listening"
pids=""
i=0
while [ $i -lt "$n" ]; do
    "$client" "$pause" "$gap" "$port" & pids="$pids $!"
    i=$((i + 1))
done
wait_for $((2 * n)) "state established"  # both ends of each connection
kill -TERM "$server"
status=0
for p in $pids; do wait "$p" || status=$?; done
pkill -P $$ sleep 2>/dev/null
exit $status
