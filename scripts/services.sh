#!/usr/bin/env bash
# Makes sure the servers the tests talk to are up on loopback, starting any that is not.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then return 0; fi
  echo "services: starting $name"
  "$@" >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    up "$port" && return 0
    sleep 0.5
  done
  echo "services: $name did not come up on port $port" >&2
  return 1
}

status=0
start PostgreSQL 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' || status=1
start Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log || status=1
start MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || status=1
start RabbitMQ 5672 rabbitmq-server -detached || status=1
start Mosquitto 1883 mosquitto -d -c /etc/mosquitto/mosquitto.conf || status=1
start NATS 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
  -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || status=1
exit $status
