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
echo "ensure-services: PostgreSQL and RabbitMQ are up"
