"""Emulated hosts: Linux network namespaces joined by a bridge in a switch namespace.

Every namespace, bridge and veth pair lives inside namespaces this module
creates, so nothing is added to the host's own network stack, and
``remove`` deletes them all (deleting a namespace deletes its interfaces).
Commands run in a host with ``unshare --mount`` and tmpfs mounts over the
folders that host must not see, so a client process sees only its own data.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class NamespaceError(RuntimeError):
    """A step of building the emulated network failed; ``step`` names it."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step} failed: {detail}")
        self.step = step


def _ip(step: str, *args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NamespaceError(
            step, f"`ip {' '.join(args)}` exited {result.returncode}: {result.stderr}"
        )


class Network:
    """A switch namespace with bridge ``br0`` and one namespace per emulated host.

    Host ``name`` has namespace ``<prefix>-<name>`` with interface ``eth0``;
    its veth peer ``v-<name>`` is a port of the bridge, so setting that port
    down cuts the host's link the way an unplugged cable does.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.switch = self._add_namespace("sw")
        _ip("bridge", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("bridge", "-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> str:
        namespace = f"{self.prefix}-{name}"
        _ip("ip netns add", "netns", "add", namespace)
        self.namespaces.append(namespace)
        _ip("loopback", "-n", namespace, "link", "set", "lo", "up")
        return namespace

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def add_host(self, host: str, address: str) -> None:
        """Create ``host`` with ``address`` (CIDR) on eth0, cabled to the bridge."""
        namespace = self._add_namespace(host)
        port = f"v-{host}"
        _ip(
            "veth pair",
            *("-n", self.switch, "link", "add", port, "type", "veth"),
            *("peer", "name", "eth0", "netns", namespace),
        )
        _ip("bridge port", "-n", self.switch, "link", "set", port, "master", "br0")
        _ip("bridge port", "-n", self.switch, "link", "set", port, "up")
        _ip("address", "-n", namespace, "address", "add", address, "dev", "eth0")
        _ip("link up", "-n", namespace, "link", "set", "eth0", "up")

    def set_link(self, host: str, up: bool) -> None:
        """Plug (``up``) or unplug the cable of ``host`` at the bridge."""
        state = "up" if up else "down"
        _ip("link " + state, "-n", self.switch, "link", "set", f"v-{host}", state)

    def add_address(self, host: str, address: str) -> None:
        _ip(
            "address",
            "-n",
            self.namespace(host),
            "address",
            "add",
            address,
            "dev",
            "eth0",
        )

    def delete_address(self, host: str, address: str) -> None:
        _ip(
            "address",
            "-n",
            self.namespace(host),
            "address",
            "del",
            address,
            "dev",
            "eth0",
        )

    def command(
        self, host: str, argv: Sequence[str], hidden: Sequence[Path] = ()
    ) -> list[str]:
        """Return a command line that runs ``argv`` in ``host`` without ``hidden``.

        Each hidden folder is covered by an empty tmpfs in a private mount
        namespace, so the process cannot list or open what is below it.
        """
        mounts = [
            f"mount -t tmpfs -o size=64k,mode=0500 fedcdr-hidden {shlex.quote(str(p))}"
            for p in hidden
        ]
        script = " && ".join([*mounts, 'exec "$@"'])
        return [
            *("ip", "netns", "exec", self.namespace(host)),
            *("unshare", "--mount", "--propagation", "private"),
            *("sh", "-c", script, "sh", *argv),
        ]

    def remove(self) -> list[str]:
        """Delete every namespace; return the names that could not be deleted."""
        left = []
        for namespace in reversed(self.namespaces):
            result = subprocess.run(
                ["ip", "netns", "delete", namespace], capture_output=True, text=True
            )
            if result.returncode != 0 and "No such file" not in result.stderr:
                left.append(namespace)
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout
        left += [n for n in self.namespaces if n in listed.split() and n not in left]
        return left


def unavailable_reason() -> str | None:
    """Return why namespaces cannot be built here, naming the failed step, or None."""
    if os.geteuid() != 0:
        return "network namespaces: the tests must run as root to create them"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"network namespaces: `{tool}` is not installed (apt-get install iproute2 util-linux)"
    probe = f"fedcdr-probe-{os.getpid()}"
    try:
        _ip("ip netns add", "netns", "add", probe)
    except NamespaceError as error:
        return f"network namespaces: {error}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None
