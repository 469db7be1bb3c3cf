#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop syngate.service || true
fi
# A stopped syngate leaves its data path attached for the next start (see
# README, Restarts and upgrades); removing the package detaches it. An
# upgrade keeps it: the new version takes it over.
if [ "$1" = remove ]; then
	/usr/bin/syngate reset -c /etc/syngate/syngate.yaml || true
fi
