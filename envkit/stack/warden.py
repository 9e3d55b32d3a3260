"""The warden: cleanup on the engine's side, for when this machine dies with its reaper.

The reaper (:mod:`envkit.stack.reaper`) runs on the client's machine: when that machine dies
(a CI runner killed, a laptop closed, a container ``kill -9``-ed with envkit inside), a stack on
a remote engine would stay there until someone runs envkit again. So when the engine may
outlive this machine (:func:`wanted`), each stack gets one more container on its engine: the
warden (:mod:`envkit.stack.warden_main`), labelled with the stack's labels and
``envkit.role=warden``, with the engine's socket mounted. The reaper holds a TCP connection to it
(a lease; :class:`envkit.stack.warden_link.Link`) for as long as the stack is up, and writes a byte every few
seconds. Once no lease has been open for the warden's grace, the warden removes what carries
``envkit.stack=<this stack's id>`` (containers, networks, volumes), nothing else, then itself.

Its image is made by envkit, as any stack image, from a project of its own written under the
cache directory (:func:`project`): a Debian recipe with Python (no pull) and the program on top,
cached by key on each engine (and found in the remote cache, as any image). When it cannot be
made, envkit says why once and the stack comes up without a warden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Protocol

from envkit import settings as settings_mod
from envkit.docker import labels
from envkit.docker.engine import ContainerSpec, Daemon
from envkit.errors import EnvkitError
from envkit.fsutil import atomic_write_text, ensure_private_dir
from envkit.progress import Progress, Silent
from envkit.remote import ServiceHost
from envkit.settings import Settings
from envkit.stack import warden_main
from envkit.stack.objects import StackObjects
from envkit.stack.state import StackState, StateFile
from envkit.stack.warden_link import connect


class Stack(Protocol):
    """What :func:`keep` and :func:`check` use of an :class:`envkit.stack.stack.Stack`."""

    id: str
    objects: StackObjects
    reach: ServiceHost
    settings: Settings
    state_file: StateFile

    def _locked(self, timeout: float | None = None) -> contextlib.AbstractContextManager[None]: ...


log = logging.getLogger("envkit")

PROJECT = "envkit-warden"  # the warden image's project: its images are envkit-warden/warden:<key>
IMAGE = "warden"
ROLE = "warden"  # the value of envkit.role on a warden's container
PORT = warden_main.PORT
PROBE = 10.0  # seconds an acquire gives a new warden to answer before it gives up on it

STACK_FILE = f"""# The image of envkit's warden, written by envkit (envkit/stack/warden.py): do not edit.
[stack]
name = "{PROJECT}"

[images.warden-python]
recipe = "recipe.toml"

[images.{IMAGE}]
"""
# Unpinned ("*"): the warden must come up wherever envkit runs, and a pin that the mirror no
# longer serves would turn it off until envkit is upgraded. This text is the image's key, so an
# engine builds it once; a remote cache gives every machine the same image.
RECIPE = """[debian]
suite = "bookworm"
variant = "minbase"
snapshot = "20261207T000000Z"
sources = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
exclude_paths = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"]

[packages]
python3-minimal = "*"
"libpython3.11-stdlib" = "*"

[image]
env = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin", LANG = "C.UTF-8", PYTHONUNBUFFERED = "1" }
"""
DOCKERFILE = """FROM warden-python
COPY warden_main.py /usr/local/lib/envkit-warden/warden_main.py
ENTRYPOINT ["python3", "-I", "/usr/local/lib/envkit-warden/warden_main.py"]
"""


def wanted(host: ServiceHost, settings: Settings) -> tuple[bool, str]:
    """Whether the stack gets a warden, and why: ENVKIT_WARDEN decides when set; otherwise yes
    when the engine may outlive this machine (it is remote, or this process runs in a container
    of it), no for a local engine (the machine that dies takes the engine with it)."""
    if settings.warden is not None:
        return settings.warden, f"{settings_mod.WARDEN}={int(settings.warden)}"
    if not host.engine_local:
        return True, "the engine is on another machine"
    if host.client is not None:
        return True, f"this process runs in the container {host.client.name} of the engine"
    return False, "the engine runs on this machine"


def project(cache_dir: Path) -> Path:
    """The warden image's project directory (written when its files differ): its stack file,
    the recipe, and the Dockerfile with the program beside it."""
    root = cache_dir / PROJECT
    files = {
        root / "envkit.toml": STACK_FILE,
        root / "images" / "warden-python" / "recipe.toml": RECIPE,
        root / "images" / IMAGE / "Dockerfile": DOCKERFILE,
        root / "images" / IMAGE / "warden_main.py": Path(warden_main.__file__).read_text(encoding="utf-8"),
    }
    for path, text in files.items():
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                continue
        ensure_private_dir(path.parent)
        atomic_write_text(path, text)
    return root


def image(daemon: Daemon, settings: Settings, progress: Progress | None = None) -> str:
    """The warden image's tag on ``daemon``: cached by key, pulled from the remote cache, or built."""
    from envkit.config.find import load
    from envkit.images.build import ensure

    root = project(settings.cache_dir)
    own = dataclasses.replace(settings, root=root, config_name=None, state_dir=root / ".envkit")
    config = load(root, settings=own)
    results = ensure(config, daemon, names=[IMAGE], progress=progress or Silent(), settings=own)
    (tag,) = [r.tag for r in results if r.image == IMAGE]
    return tag


def image_or_warn(daemon: Daemon, settings: Settings, stack_id: str, progress: Progress | None) -> str | None:
    """:func:`image`, or None after one warning that says why and what still cleans up."""
    try:
        return image(daemon, settings, progress)
    except EnvkitError as err:
        first = str(err).splitlines()[0]
        log.warning(
            "envkit: stack %s runs without a warden on its engine: its image could not be made (%s). "
            "If this machine dies, the stack stays on the engine until its TTL, or until envkit runs "
            "here again; the reaper on this machine still removes it as usual. (%s=0 says no warden.)",
            stack_id,
            first,
            settings_mod.WARDEN,
        )
        return None


def image_for(
    host: ServiceHost, daemon: Daemon, settings: Settings, stack_id: str, progress: Progress | None
) -> str | None:
    """The warden's image tag when the stack gets a warden (:func:`wanted`), else None."""
    on, _why = wanted(host, settings)
    return image_or_warn(daemon, settings, stack_id, progress) if on else None


def keep(stack: Stack, state: StackState, tag: str | None) -> tuple[str, str] | None:
    """Under the state lock (with ``tag``, the image :func:`image_for` gave): the stack's warden
    running, its endpoint recorded for the reaper. A new one's (container, endpoint); None when
    it ran already, or cannot start (said), or the stack has none."""
    if tag is None:
        return None
    try:
        cid, endpoint, new = start(
            stack.objects, project_name=state.project, tag=tag, host=stack.reach, settings=stack.settings
        )
    except EnvkitError as err:
        log.warning("envkit: stack %s runs without a warden: it did not start (%s)", stack.id, err)
        return None
    if state.warden != endpoint:
        state.warden = endpoint
        stack.state_file.save(state)
    return (cid, endpoint) if new else None


def check(stack: Stack, started: tuple[str, str] | None) -> None:
    """A new warden must answer this machine at its endpoint, or it would remove the stack (no
    lease would ever reach it): one that does not is removed, and the stack runs without."""
    if started is None:
        return
    cid, endpoint = started
    if probe(endpoint, stack.id):
        return
    log.warning(
        "envkit: stack %s runs without a warden: it does not answer at %s from here (a firewall "
        "between this machine and the engine's published ports?); %s=0 says no warden",
        stack.id,
        endpoint,
        settings_mod.WARDEN,
    )
    with stack._locked():
        stack.objects.remove([cid])
        state = stack.state_file.read()
        if state is not None and state.warden == endpoint:
            state.warden = None
            stack.state_file.save(state)


def container_name(stack_id: str) -> str:
    return f"{stack_id}_warden"


def start(
    objects: StackObjects, *, project_name: str, tag: str, host: ServiceHost, settings: Settings
) -> tuple[str, str, bool]:
    """A running warden for the stack (the one there, or a new one): its container ID, its
    endpoint ("HOST:PORT" as this process reaches it), and whether it is new."""
    daemon = objects.daemon
    new = False
    running = [c for c in objects.wardens() if c.running]
    if running:
        cid = running[0].id
    else:
        objects.remove([c.id for c in objects.wardens()])
        objects.ensure_network(project_name)
        spec = ContainerSpec(
            name=container_name(objects.stack_id),
            image=tag,
            command=[
                "--stack",
                objects.stack_id,
                "--grace",
                f"{settings.warden_grace:g}",
                "--port",
                str(PORT),
            ],
            environment={},
            labels={labels.STACK: objects.stack_id, labels.PROJECT: project_name, labels.ROLE: ROLE},
            ports=[PORT],
            network=objects.stack_id,
            aliases=[],
            host=host.publish,
            mounts=[("bind", settings.warden_socket, "/var/run/docker.sock", False)],
            no_healthcheck=True,
        )
        cid = daemon.create_container(spec)
        new = True
        try:
            daemon.start_container(cid)
        except EnvkitError:
            objects.remove([cid])
            raise
    if host.network:
        return cid, f"{container_name(objects.stack_id)}:{PORT}", new
    details = daemon.inspect_container(cid)
    port = details.ports.get(str(PORT)) if details is not None else None
    if port is None:
        objects.remove([cid])
        raise EnvkitError(f"the warden's port {PORT} was not published on the engine")
    return cid, f"{host.host}:{port}", new


def probe(endpoint: str, stack_id: str, within: float = PROBE) -> bool:
    """Whether the warden answers at ``endpoint`` within ``within`` seconds (a new one boots)."""
    deadline = time.monotonic() + within
    while True:
        sock = connect(endpoint, stack_id)
        if sock is not None:
            sock.close()
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
