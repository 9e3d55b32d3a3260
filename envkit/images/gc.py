"""``envkit gc``: remove this stack's image tags whose keys are no longer current."""

from __future__ import annotations

from dataclasses import dataclass, field

from envkit.config.model import StackConfig
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import DaemonError
from envkit.images.build import CurrentTags, plan
from envkit.images.manifests import Manifests
from envkit.progress import Progress
from envkit.settings import Settings

IN_USE = 409  # the engine's answer when a container still uses an image


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"removed": self.removed, "kept_in_use": self.kept_in_use}


def gc(
    config: StackConfig,
    daemon: Daemon,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> GcResult:
    """Remove this stack's image tags whose keys are not current, here or in another checkout.

    Only images labelled with this stack's name are considered, and only tags
    of the form ``<stack>/<image>:...`` are removed, so a tag someone added by
    hand keeps its image alive. A tag that another checkout of the same stack
    needed at its last build (recorded in the user's cache) is kept too, as
    long as that checkout exists.
    """
    settings = settings or Settings.from_env()
    the_plan = plan(config, daemon, progress=progress, stall=settings.build_stall)
    current = {the_plan.tag(name) for name in the_plan.order}
    current |= CurrentTags(settings.cache_dir, config.name).others(config.state_dir)
    result = GcResult()
    for image in daemon.images(labels.selector(labels.PROJECT, config.name)):
        if image.labels.get(labels.PROJECT) != config.name:
            continue
        for tag in image.tags:
            if tag in current or not tag.startswith(f"{config.name}/"):
                continue
            if dry_run:
                result.removed.append(tag)
                continue
            try:
                daemon.remove_image(tag)
                result.removed.append(tag)
            except DaemonError as err:
                if err.status != IN_USE:
                    raise
                result.kept_in_use.append(tag)
    if not dry_run:
        manifests = Manifests(config.state_dir / "manifests")
        for name in config.images:
            manifests.forget(name, {the_plan.inputs[name].key})
    return result
