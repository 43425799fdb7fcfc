"""The recipes: one module each, registered by name like the components.

Every module of this package except ``base`` is a recipe and is imported the first time a
recipe is asked for (not when the package is: recipes call the stages, which import this
package), so adding a recipe is adding its module and its ``params/profile`` file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from slam.recipes.base import Recipe, TrainingRows
from slam.registry import Registry

if TYPE_CHECKING:
    from slam.config import SlamConfig

RECIPES: Registry[Recipe] = Registry("recipe")

__all__ = ["RECIPES", "Recipe", "TrainingRows", "recipe_names", "recipe_of"]


@cache
def _load_recipe_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def recipe_names() -> list[str]:
    _load_recipe_modules()
    return RECIPES.names()


def recipe_of(cfg: SlamConfig) -> Recipe:
    """The recipe ``cfg.recipe`` names, in the variant the rest of the config selects."""
    _load_recipe_modules()
    return RECIPES.get(cfg.recipe)().for_config(cfg)
