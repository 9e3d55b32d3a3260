"""``envkit hooks``: a git pre-push hook that runs ``envkit e2e``, keeping the stack warm.

envkit only ever replaces or removes a hook it installed itself (it carries
:data:`MARKER`); a foreign hook is refused, or with ``force`` kept as
``pre-push.envkit-backup`` and restored on uninstall. ``core.hooksPath`` is
honoured (git is asked where hooks live).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from envkit.errors import HookError

MARKER = "# envkit-hook: pre-push"


def hook_path() -> Path:
    """Where git looks for this repository's pre-push hook."""
    try:
        hooks_dir = subprocess.run(
            ["git", "rev-parse", "--git-path", "hooks"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise HookError("not inside a git work tree; run `envkit hooks` in your repository") from None
    return Path(hooks_dir).resolve() / "pre-push"


def _ours(hook: Path) -> bool:
    return hook.is_file() and MARKER in hook.read_text(encoding="utf-8", errors="replace")


def install(ttl: float, *, force: bool = False) -> list[str]:
    """Write envkit's pre-push hook; what was done, a line each."""
    hook = hook_path()
    done = []
    if hook.exists() and not _ours(hook):
        if not force:
            raise HookError(
                f"{hook} exists and was not installed by envkit\n"
                "  fix: merge `envkit e2e` into it by hand, or pass --force to replace it "
                "(it is kept as pre-push.envkit-backup)"
            )
        backup = hook.with_name("pre-push.envkit-backup")
        hook.replace(backup)
        done.append(f"kept the earlier hook as {backup}")
    hook.parent.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    hook.write_text(
        "#!/bin/sh\n"
        f"{MARKER}\n"
        "# Installed by `envkit hooks`; `envkit hooks --uninstall` removes it.\n"
        f"# Runs the e2e suite; the stack stays warm for {ttl:g}s, so the next push attaches to it.\n"
        "# Skip it once with `git push --no-verify`.\n"
        f"exec {python} -m envkit e2e --ttl {ttl:g} </dev/null\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    done.append(f"installed {hook}: each push runs `envkit e2e` (stack kept warm for {ttl:g}s)")
    return done


def uninstall() -> list[str]:
    """Remove envkit's pre-push hook (restoring the one it replaced); what was done."""
    hook = hook_path()
    if not hook.exists():
        return [f"no pre-push hook at {hook}; nothing to remove"]
    if not _ours(hook):
        raise HookError(f"{hook} was not installed by envkit; left alone")
    hook.unlink()
    done = [f"removed envkit's pre-push hook {hook}"]
    backup = hook.with_name("pre-push.envkit-backup")
    if backup.exists():
        backup.rename(hook)
        done.append(f"restored the earlier hook from {backup.name}")
    return done
