"""Recipe images in the stack file and in the key, and ENVKIT_CONFIG (another stack file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envkit.config.find import find_root, load
from envkit.errors import ConfigError
from envkit.images.digest import BUILDER, RECIPE_BUILDER, Hasher, Inputs, image_inputs
from envkit.images.manifests import explain
from envkit.images.statcache import StatCache
from envkit.settings import Settings

RECIPE = """\
[debian]
suite = "bookworm"
snapshot = "20240101T000000Z"
sources = ["deb http://snapshot.debian.org/archive/debian/{snapshot} bookworm main"]

[packages]
redis-server = "5:7.0.15-1~deb12u1"

[image]
env = { LANG = "C.UTF-8" }
cmd = ["/bin/bash"]
"""

STACK = '[stack]\nname = "demo"\n[images.base]\nrecipe = "recipe.toml"\n[images.app]\n'


def make(root: Path, toml: str = STACK, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "envkit.toml").write_text(toml)
    if files is None:
        files = {"images/base/recipe.toml": RECIPE, "images/app/Dockerfile": "FROM base\nCOPY . /app/\n"}
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def inputs_of(root: Path, name: str, parents: dict[str, str] | None = None) -> Inputs:
    spec = load(root, environ={}).images[name]
    files = Hasher(StatCache(root / ".envkit" / "stat-cache.json")).context_files(spec)
    return image_inputs(spec, files, platform="linux/amd64", bases={}, parents=parents or {})


# --- the stack file ---------------------------------------------------------------------------------


def test_recipe_image_is_loaded_with_its_recipe(tmp_path: Path) -> None:
    make(tmp_path)
    config = load(tmp_path, environ={})
    base = config.images["base"]
    path = (tmp_path / "images/base/recipe.toml").resolve()
    assert base.recipe is not None
    assert base.recipe.file == path and base.recipe.suite == "bookworm"
    assert dict(base.recipe.packages) == {"redis-server": "5:7.0.15-1~deb12u1"}
    assert base.dockerfile is None  # a recipe image has no Dockerfile
    assert base.recipe.text == RECIPE and base.definition == RECIPE
    assert base.parents == () and base.externals == ()
    assert base.args == {} and base.target is None and base.platform is None
    # an image FROM the recipe image builds on it
    assert config.images["app"].parents == ("base",)
    assert config.images["app"].externals == ()
    assert config.images["app"].recipe is None
    assert config.order(["app"]) == ["base", "app"]


def test_recipe_path_is_relative_to_the_context(tmp_path: Path) -> None:
    make(
        tmp_path,
        '[stack]\nname = "demo"\n[images.base]\ncontext = "os"\nrecipe = "debian/bookworm.toml"\n',
        {"os/debian/bookworm.toml": RECIPE},
    )
    base = load(tmp_path, environ={}).images["base"]
    assert base.context == (tmp_path / "os").resolve()
    assert base.recipe is not None and base.recipe.file == (tmp_path / "os/debian/bookworm.toml").resolve()


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('dockerfile = "Dockerfile"', "images.base.dockerfile"),
        ('args = { A = "1" }', "images.base.args"),
        ('target = "final"', "images.base.target"),
        ('platform = "linux/amd64"', "images.base.platform"),
    ],
)
def test_recipe_excludes_dockerfile_settings(tmp_path: Path, extra: str, key: str) -> None:
    make(tmp_path, STACK.replace('recipe = "recipe.toml"\n', f'recipe = "recipe.toml"\n{extra}\n'))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.key == key
    assert caught.value.file == tmp_path / "envkit.toml"
    assert "fix: " in str(caught.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    make(tmp_path, files={"images/base/README": "", "images/app/Dockerfile": "FROM base\n"})
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.key == "images.base.recipe"
    assert str((tmp_path / "images/base/recipe.toml").resolve()) in str(caught.value)


def test_recipe_must_be_a_path(tmp_path: Path) -> None:
    make(tmp_path, STACK.replace('recipe = "recipe.toml"', "recipe = true"))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.key == "images.base.recipe"


def test_bad_recipe_inside_names_the_recipe_file(tmp_path: Path) -> None:
    make(
        tmp_path,
        files={
            "images/base/recipe.toml": RECIPE.replace('suite = "bookworm"\n', ""),
            "images/app/Dockerfile": "FROM base\n",
        },
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    err = caught.value
    assert err.file == (tmp_path / "images/base/recipe.toml").resolve()
    assert err.key == "debian.suite"
    assert str(err).startswith(str(err.file))


# --- the key ------------------------------------------------------------------------------------------


def test_recipe_image_key_uses_the_recipe_builder_and_changes_with_the_recipe(tmp_path: Path) -> None:
    make(tmp_path)
    before = inputs_of(tmp_path, "base")
    assert before.builder == RECIPE_BUILDER
    assert before.builder != BUILDER
    assert inputs_of(tmp_path, "app", {"base": before.key}).builder == BUILDER
    assert inputs_of(tmp_path, "base").key == before.key  # stable while nothing changes

    (tmp_path / "images/base/recipe.toml").write_text(RECIPE.replace("deb12u1", "deb12u2"))
    after = inputs_of(tmp_path, "base")
    assert after.key != before.key
    reasons = explain(before, after)
    assert "the recipe changed" in reasons
    assert "the Dockerfile changed" not in reasons
    # and the image built on it gets a new key through its parent's
    app_before = inputs_of(tmp_path, "app", {"base": before.key})
    app_after = inputs_of(tmp_path, "app", {"base": after.key})
    assert app_before.key != app_after.key
    assert any(r.startswith("parent base changed") for r in explain(app_before, app_after))


def test_switching_an_image_to_a_recipe_is_explained_as_a_builder_change(tmp_path: Path) -> None:
    make(tmp_path)
    as_recipe = inputs_of(tmp_path, "base")
    (tmp_path / "envkit.toml").write_text(STACK.replace('recipe = "recipe.toml"', ""))
    (tmp_path / "images/base/Dockerfile").write_text("FROM scratch\n")
    as_dockerfile = inputs_of(tmp_path, "base")
    assert as_dockerfile.builder == BUILDER
    assert as_dockerfile.key != as_recipe.key
    assert explain(as_dockerfile, as_recipe)[0].startswith("the key schema or builder changed")


# --- ENVKIT_CONFIG --------------------------------------------------------------------------------------


def two_stack_files(root: Path) -> Path:
    make(root, '[stack]\nname = "main"\n', {})
    (root / "envkit.alpine.toml").write_text('[stack]\nname = "alpine"\n')
    return root


def test_envkit_config_picks_another_stack_file_with_its_own_state(tmp_path: Path) -> None:
    two_stack_files(tmp_path)
    alpine = load(tmp_path, environ={"ENVKIT_CONFIG": "envkit.alpine.toml"})
    assert alpine.name == "alpine"
    assert alpine.file == tmp_path / "envkit.alpine.toml"
    assert alpine.state_dir == (tmp_path / ".envkit-alpine").resolve()
    main = load(tmp_path, environ={})
    assert main.name == "main" and main.state_dir == (tmp_path / ".envkit").resolve()
    assert load(tmp_path, environ={"ENVKIT_CONFIG": " envkit.toml "}).name == "main"
    # ENVKIT_STATE_DIR still wins
    moved = load(tmp_path, environ={"ENVKIT_CONFIG": "envkit.alpine.toml", "ENVKIT_STATE_DIR": "/tmp/s"})
    assert moved.state_dir == Path("/tmp/s").resolve()


def test_envkit_config_of_any_name_gets_a_state_dir_named_after_it(tmp_path: Path) -> None:
    (tmp_path / "ci.toml").write_text('[stack]\nname = "ci"\n')
    config = load(tmp_path, environ={"ENVKIT_CONFIG": "ci.toml"})
    assert config.name == "ci"
    assert config.state_dir == (tmp_path / ".envkit-ci").resolve()


@pytest.mark.parametrize(
    "name", ["sub/envkit.toml", "/abs/envkit.toml", "envkit.yaml", "envkit", "x.toml.bak"]
)
def test_envkit_config_must_name_a_toml_file(tmp_path: Path, name: str) -> None:
    two_stack_files(tmp_path)
    for call in (
        lambda: load(tmp_path, environ={"ENVKIT_CONFIG": name}),
        lambda: find_root(tmp_path, environ={"ENVKIT_CONFIG": name}),
        lambda: Settings.from_env({"ENVKIT_CONFIG": name}),
    ):
        with pytest.raises(ConfigError) as caught:
            call()
        assert caught.value.key == "ENVKIT_CONFIG"
        assert "ENVKIT_CONFIG" in str(caught.value) and repr(name) in str(caught.value)


def test_envkit_config_naming_a_missing_file(tmp_path: Path) -> None:
    two_stack_files(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={"ENVKIT_CONFIG": "envkit.arm.toml"})
    assert "envkit.arm.toml" in str(caught.value)
    with pytest.raises(ConfigError, match=r"envkit\.arm\.toml"):
        find_root(environ={"ENVKIT_CONFIG": "envkit.arm.toml", "ENVKIT_ROOT": str(tmp_path)})


def test_find_root_with_envkit_config_walks_up_to_that_file(tmp_path: Path) -> None:
    top = two_stack_files(tmp_path / "top")
    inner = make(top / "inner", '[stack]\nname = "inner"\n', {})  # holds only an envkit.toml
    (inner / "pyproject.toml").write_text('[tool.envkit.stack]\nname = "py"\n')
    deep = inner / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep, environ={}) == inner.resolve()
    assert find_root(deep, environ={"ENVKIT_CONFIG": "envkit.alpine.toml"}) == top.resolve()
    assert load(environ={"ENVKIT_CONFIG": "envkit.alpine.toml", "ENVKIT_ROOT": str(top)}).name == "alpine"


def test_find_root_with_envkit_config_found_nowhere(tmp_path: Path) -> None:
    make(tmp_path, '[stack]\nname = "main"\n', {})
    with pytest.raises(ConfigError) as caught:
        find_root(tmp_path, environ={"ENVKIT_CONFIG": "envkit.alpine.toml"})
    assert caught.value.key == "ENVKIT_CONFIG"
    assert "envkit.alpine.toml" in str(caught.value)


def test_envkit_config_naming_a_pyproject_without_envkit_table(tmp_path: Path) -> None:
    """ENVKIT_CONFIG=pyproject.toml on a pyproject.toml with no [tool.envkit] is a mistake like any other."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError):
        load(tmp_path, environ={"ENVKIT_CONFIG": "pyproject.toml"})
