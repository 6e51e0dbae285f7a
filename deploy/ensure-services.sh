#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on loopback; start them when installed but down.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

wait_for() {  # name, check function, seconds
  for _ in $(seq 1 "$3"); do "$2" && return 0; sleep 1; done
  echo "ensure-services: $1 did not come up within $3 s" >&2; return 1
}

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL pg_up 60 || exit 1
  else
    echo "ensure-services: PostgreSQL is not running on 127.0.0.1:5432 and is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
fi

if ! rabbit_up || ! rabbitmqctl -q status >/dev/null 2>&1; then
  if command -v rabbitmq-server >/dev/null; then
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
      echo "ensure-services: starting RabbitMQ"
      rabbitmq-server -detached || true
      sleep 3
    fi
    # A node left with its app stopped (rabbitmqctl stop_app) answers rabbitmqctl but not AMQP.
    rabbitmqctl -q start_app >/dev/null 2>&1 || true
    wait_for RabbitMQ rabbit_up 90 || exit 1
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  else
    echo "ensure-services: RabbitMQ is not running on 127.0.0.1:5672 and is not installed (apt-get install rabbitmq-server)" >&2
    exit 1
  fi
fi

# What operators expect of RabbitMQ (docs/deploy.md): the management UI and HTTP API on 15672
# (queue depths and rates in a browser) and RabbitMQ's own Prometheus metrics on 15692/metrics.
# Idempotent, and works on the running node (no restart).
RABBIT_PLUGINS="rabbitmq_management rabbitmq_prometheus"
missing_plugins() {
  local enabled
  enabled=$(rabbitmq-plugins -q list -e -m 2>/dev/null) || return 0
  for plugin in $RABBIT_PLUGINS; do grep -qx "$plugin" <<<"$enabled" || return 0; done
  return 1
}
if command -v rabbitmq-plugins >/dev/null && missing_plugins; then
  echo "ensure-services: enabling RabbitMQ plugins: $RABBIT_PLUGINS"
  # shellcheck disable=SC2086
  rabbitmq-plugins -q enable $RABBIT_PLUGINS >/dev/null || {
    echo "ensure-services: could not enable $RABBIT_PLUGINS" >&2; exit 1; }
fi
prometheus_up() { (exec 3<>/dev/tcp/127.0.0.1/15692) 2>/dev/null; }
management_up() { (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; }
if command -v rabbitmq-plugins >/dev/null; then
  wait_for "RabbitMQ management (15672)" management_up 60 || exit 1
  wait_for "RabbitMQ Prometheus (15692)" prometheus_up 60 || exit 1
fi
echo "ensure-services: PostgreSQL and RabbitMQ are up (management UI http://127.0.0.1:15672, metrics :15692)"
