#!/usr/bin/env bash
# Install the command-line tools the tests need: promtool (tests/deploy), Debian's Chromium (the
# browser tests, tests/support/test_admin_browser.py, drive /usr/bin/chromium with Playwright; the
# Python package comes from requirements.txt, and `playwright install` is never run: no browser
# download) and Debian's Postfix (the bounce tests, tests/notifications/test_bounces_postfix.py, run
# a private instance of it on loopback: tests/support/postfix.py; the system's own is never started).
#
# Idempotent: does nothing when promtool, /usr/bin/chromium and /usr/sbin/postfix are already there. Debian's `prometheus` package ships
# promtool; its postinst would also start a Prometheus server, which we do not want here (the tests
# only need the checker). Service starts are refused through policy-rc.d for the duration of the
# install, and any /usr/bin/prometheus process that appears during the install is stopped by PID.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
POSTFIX=/usr/sbin/postfix
need_promtool=1
need_chromium=1
need_postfix=1
if command -v promtool >/dev/null 2>&1; then
  echo "install-tools: promtool already installed ($(command -v promtool))"
  need_promtool=0
fi
if [ -x "$CHROMIUM" ]; then
  echo "install-tools: chromium already installed ($CHROMIUM)"
  need_chromium=0
fi
if [ -x "$POSTFIX" ]; then
  echo "install-tools: postfix already installed ($POSTFIX)"
  need_postfix=0
fi
if [ "$need_promtool" = 0 ] && [ "$need_chromium" = 0 ] && [ "$need_postfix" = 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-tools: promtool, chromium or postfix is missing; run this script as root (it uses apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

if [ "$need_chromium" = 1 ]; then
  # No recommends: the headless browser needs neither the desktop integration nor extra fonts.
  apt-get install -y -qq --no-install-recommends chromium
  test -x "$CHROMIUM"
  echo "install-tools: $("$CHROMIUM" --version 2>/dev/null | head -n1)"
fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# Temporary, from deploy/install-tools.sh: do not start services.\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

if [ "$need_postfix" = 1 ]; then
  # "No configuration": the package leaves /etc/postfix/main.cf unwritten and the system instance
  # unused; the tests give their private instance its own config and queue directories. The package
  # still creates the postfix user and the postdrop group that instance runs with.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends postfix
  if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now postfix.service >/dev/null 2>&1 || true
    else
      systemctl disable postfix.service >/dev/null 2>&1 || true
    fi
  fi
  test -x "$POSTFIX"
  echo "install-tools: postfix $(/usr/sbin/postconf -d -h mail_version 2>/dev/null)"
fi
if [ "$need_promtool" = 0 ]; then
  exit 0
fi

# PIDs of running Prometheus servers, matched by executable path (never by name pattern).
prometheus_pids() {
  local exe pid
  for exe in /proc/[0-9]*/exe; do
    pid=${exe#/proc/}; pid=${pid%/exe}
    [ "$(readlink "$exe" 2>/dev/null)" = /usr/bin/prometheus ] && echo "$pid"
  done
  return 0
}

before=" $(prometheus_pids | tr '\n' ' ') "

# No recommends: prometheus-node-exporter is not needed for promtool.
apt-get install -y -qq --no-install-recommends prometheus

# We want promtool, not a server: stop what the package may have started anyway (systemd hosts
# ignore policy-rc.d) and keep it from starting at the next boot. Both work without a running init.
if command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    systemctl disable prometheus.service >/dev/null 2>&1 || true
  fi
fi
if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/prometheus ]; then
  update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
for pid in $(prometheus_pids); do
  case "$before" in *" $pid "*) continue ;; esac
  echo "install-tools: stopping the Prometheus server the package started (pid $pid)"
  kill "$pid" 2>/dev/null || true
done

command -v promtool >/dev/null
echo "install-tools: $(promtool --version 2>&1 | head -n1)"
