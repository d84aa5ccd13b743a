"""The recipe set: every ``recipes/*.toml`` parsed and validated the same way.

``parse_recipe`` reads one file: its ``kind`` (default ``package``) picks the module of
``tasks.kinds`` that says which further keys it may have and validates them, with the shared
``Checker`` that names file and field. ``load_recipes`` then checks the set (duplicates, unknown
dependencies, cycles) and raises every problem at once.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from tasks.engine.graph import find_cycle
from tasks.kinds import DEFAULT, KINDS
from tasks.model.recipe import (
    COMMON_KEYS,
    PLATFORMS,
    Checker,
    Recipe,
    RecipeError,
    RecipeErrors,
    close_match,
    common_fields,
)


def parse_recipe(path: Path) -> tuple[Recipe | None, list[RecipeError]]:
    """Parse and validate one recipe file, of any kind (its dependencies are checked by
    ``load_recipes``): the common keys here, the rest by its kind's module."""
    c = Checker(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        return None, [RecipeError(path, "", f"not valid TOML: {e}")]
    except OSError as e:
        return None, [RecipeError(path, "", f"cannot read: {e.strerror}")]
    kind_name = c.typed(data, "kind", str, "", DEFAULT)
    kind = KINDS.get(kind_name)
    if kind is None:
        hint = close_match(kind_name, KINDS)
        c.err(
            "kind",
            f"unknown kind {kind_name!r} (kinds: {', '.join(KINDS)})"
            + (f"; did you mean {hint[0]!r}?" if hint else ""),
        )
        return None, c.errors
    c.keys(data, set(COMMON_KEYS | kind.KEYS), "")
    common = common_fields(c, data, path)
    fields = kind.parse(c, data, path, common["name"])
    recipe = Recipe(**common, **fields, kind=kind_name)
    return (None if c.errors else recipe), c.errors


def load_recipes(recipes_dir: Path) -> dict[str, Recipe]:
    """Load and validate every ``*.toml`` under ``recipes_dir``: schema, duplicates, unknown
    dependencies and cycles. Raises ``RecipeErrors`` listing every problem found."""
    recipes: dict[str, Recipe] = {}
    errors: list[RecipeError] = []
    broken: set[str] = set()  # stems of files with errors: their dependents say nothing more
    if not recipes_dir.is_dir():
        raise RecipeErrors([RecipeError(recipes_dir, "", "recipe directory not found")])
    for path in sorted(recipes_dir.glob("*.toml")):
        recipe, errs = parse_recipe(path)
        errors += errs
        if recipe is None:
            broken.add(path.stem)
            continue
        if recipe.name in recipes:
            other = recipes[recipe.name].path
            errors.append(
                RecipeError(path, "name", f"package {recipe.name!r} is also defined in {other}")
            )
            continue
        recipes[recipe.name] = recipe
    # a dependency names a recipe or one link of a chain (`go1.20`); a recipe that makes a
    # chain stands for its last link
    known = set(recipes)
    for recipe in recipes.values():
        for plat in PLATFORMS:
            known.update(recipe.link_name(v) for v in recipe.chain_on(plat))
    for recipe in recipes.values():
        deps = set(recipe.depends)
        for over in recipe.platform.values():
            deps |= set(over.get("depends", []))
        for dep in sorted(deps - known - broken):
            hint = close_match(dep, known)
            errors.append(
                RecipeError(
                    recipe.path,
                    "depends",
                    f"unknown package {dep!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            )
    if not errors:
        owner = {
            r.link_name(v): n for n, r in recipes.items() for p in PLATFORMS for v in r.chain_on(p)
        }
        for plat in PLATFORMS:
            edges = {
                n: [owner.get(d, d) for d in (r.platform.get(plat, {}).get("depends", r.depends))]
                for n, r in recipes.items()
            }
            cycle = find_cycle(edges)
            if cycle:
                chain = " -> ".join(cycle)
                files = ", ".join(str(recipes[n].path) for n in cycle[:-1])
                errors.append(
                    RecipeError(
                        recipes[cycle[0]].path, "depends", f"dependency cycle: {chain} ({files})"
                    )
                )
                break
    if errors:
        raise RecipeErrors(errors)
    return recipes
