#!/bin/sh
# The service is not enabled or started: the example configuration names
# eth0 and documentation addresses, which must be edited first.
set -e
chmod 0700 /var/lib/syngate
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
