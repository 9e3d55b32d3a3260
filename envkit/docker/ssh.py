"""An ``ssh://`` engine: the system's ``ssh`` command carries each connection, as the docker CLI.

``docker -H ssh://user@host`` runs ``ssh ... user@host docker system dial-stdio``
and speaks HTTP through the process's stdin and stdout; envkit does the same, so
what works for the docker command (``~/.ssh/config``, an ssh-agent, jump hosts,
known hosts) works for envkit, and the engine's host needs the docker CLI, as for
the docker command. The process's stdin and stdout are one end of a socket pair:
the other end is a real socket, so every read and write keeps its time bound.

``ssh`` runs with ``BatchMode=yes`` (a question, such as a passphrase or an unknown
host key, is a failure, never a prompt that waits), in its own session (the
terminal's Ctrl-C stops envkit, which still needs the engine to clean up, not the
connection), and a failure is described from what ssh wrote on stderr.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urlsplit

# Seconds ssh may take to reach the host and log in (its ConnectTimeout bounds the TCP connect;
# envkit waits this long, on top of the call's own bound, for the first answer on a new connection).
LOGIN_TIMEOUT = 10.0
_REMOTE_COMMAND = ("docker", "system", "dial-stdio")
_GRACE = 0.5  # seconds ssh is given to end by itself (its reason is then known)


class SshError(Exception):
    """The ssh command cannot carry a connection to the engine; ``str`` is the reason and fix."""


@dataclass(frozen=True)
class SshTarget:
    """Where ``ssh://[user@]host[:port]`` points."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
            raise SshError(
                f"{url} is not an ssh engine address: write ssh://[user@]host[:port], as `docker -H` takes it"
            )
        user = unquote(parts.username) if parts.username else None
        return cls(parts.hostname, user, port)

    @property
    def login(self) -> str:
        """``user@host`` (the user only when the address names one), for messages."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def command(self, ssh: str = "ssh") -> list[str]:
        """The command line that connects to the engine: the docker CLI's, never prompting."""
        args = [ssh, "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={LOGIN_TIMEOUT:g}"]
        if self.user:
            args += ["-l", self.user]
        if self.port:
            args += ["-p", str(self.port)]
        return [*args, "--", self.host, *_REMOTE_COMMAND]


def failure(target: SshTarget, code: int | None, stderr: str) -> str:
    """What went wrong, from ssh's exit code (255: ssh's own failure) and its stderr, with the fix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Warning: Permanently added", "debug"))]
    said = lines[-1] if lines else ""
    check = f"`ssh {target.login} docker version` must work without a question"
    if "Permission denied" in said:
        why = "refused the login"
        fix = f"{check} (a key in ssh-agent or named by IdentityFile in ~/.ssh/config)"
    elif "Host key verification failed" in said or "host key" in said.lower():
        why = "cannot verify the host's key"
        fix = f"{check}: add the host to known_hosts (connect once with `ssh {target.login}`)"
    elif "docker" in said and "not found" in said:
        why = "has no docker command"
        fix = "install the docker CLI on the engine's host: ssh engines run `docker system dial-stdio` there"
    elif code == 255 or not said:
        why = "could not connect"
        fix = f"{check}; check the address in DOCKER_HOST (or the docker context)"
    else:
        why = f"ran `{' '.join(_REMOTE_COMMAND)}` and it failed (exit {code})"
        fix = "check the engine on that host (`docker version` there)"
    detail = f": {said}" if said else ""
    return f"ssh to {target.login} {why}{detail}; fix: {fix}"


class SshProcess:
    """One ``ssh`` process carrying one connection; :attr:`socket` is this side of it."""

    def __init__(self, target: SshTarget, timeout: float | None) -> None:
        self.target = target
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SshError(
                "ssh:// engines need the ssh command (OpenSSH's client), as the docker CLI does; "
                "fix: install it (apt-get install openssh-client)"
            )
        ours, theirs = socket.socketpair()
        # a file, not a pipe (which could fill and stop ssh); closed with the process
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                target.command(ssh),
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self._stderr,
                start_new_session=True,
            )
        except OSError as err:
            ours.close()
            self._stderr.close()
            raise SshError(f"cannot run ssh: {err}") from None
        finally:
            theirs.close()
        ours.settimeout(timeout)
        self.socket = ours
        self._closed = False
        self._ended: int | None = None  # ssh's exit code, when it ended by itself
        self._said = ""  # what it wrote on stderr

    def alive(self) -> bool:
        return not self._closed and self._process.poll() is None

    def failure(self) -> str | None:
        """Why the connection ended, once ssh has ended by itself (None while it runs, or when
        it ended without a word of complaint)."""
        if not self._closed:
            try:
                self._process.wait(timeout=_GRACE)
            except subprocess.TimeoutExpired:
                return None
            self._ended = self._process.returncode
            self._stderr.seek(0)
            self._said = self._stderr.read().decode(errors="replace")
        if self._ended is None or (self._ended == 0 and not self._said.strip()):
            return None
        return failure(self.target, self._ended, self._said)

    def close(self) -> None:
        """End the connection and reap ssh, keeping what it said. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.socket.close()
        try:  # the end of its stdin ends ssh; one that does not end is ended
            self._ended = self._process.wait(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.seek(0)
        self._said = self._stderr.read().decode(errors="replace")
        self._stderr.close()
