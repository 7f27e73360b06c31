"""``build_app``: the only place the deployment graph is bound.

serve run serve_app/serve_config.yaml      (import_path: serve_app.app:build_app)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.classifier import ClassifierDeployment
from deployments.health import HealthBoard
from deployments.provider import ProviderDeployment
from serve_app.config import EmulatorConfig, FusionConfig, load_config
from serve_app.ingress import Ingress


class AppArgs(BaseModel):
    """Arguments of the application (the ``args`` of the Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    config_path: str | None = None  # None: $FUSION_CONFIG or the packaged default_config.yaml
    emulator_url: str | None = None  # overrides the config's emulator.url


def _deployment(obj: object) -> Deployment:
    """The Serve deployment behind a decorated class (typed for mypy)."""
    assert isinstance(obj, Deployment)
    return obj


def bind_graph(config: FusionConfig) -> Application:
    d = config.deployments
    classifier = (
        None
        if d.classifier.placement == "ingress"
        else _deployment(ClassifierDeployment).options(**d.classifier.serve_options()).bind(d.classifier)
    )
    in_ingress = set(d.in_ingress(config))
    used = sorted({m.provider for m in config.models.values()} - in_ingress)
    providers = {
        name: _deployment(ProviderDeployment)
        .options(name=f"Provider_{name}", **d.for_provider(name).serve_options(config.forecast))
        .bind(name, config)
        for name in used
    }
    board = _deployment(HealthBoard).bind(config.health, config.stats)
    ingress = _deployment(Ingress).options(**d.ingress.serve_options())
    return ingress.bind(config, classifier, providers, board)


def build_app(args: AppArgs) -> Application:
    if isinstance(args, dict):  # serve passes a dict when the builder is called directly
        args = AppArgs.model_validate(args)
    config = load_config(args.config_path)
    if args.emulator_url:
        config = config.model_copy(update={"emulator": EmulatorConfig(url=args.emulator_url)})
    return bind_graph(config)
