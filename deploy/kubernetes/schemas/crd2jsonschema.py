"""Turns one version of a CustomResourceDefinition into the JSON schema that
check.py validates custom resources against, so the check needs no cluster
and no network. README.md beside this file says which CRDs were converted,
from which release, and how to convert a newer one.

    crd2jsonschema.py CRD.yaml VERSION > KIND_VERSION-RELEASE.json

The rules are those of kubeconform's openapi2jsonschema, made stricter at
the root and truer to the API server in one place:

- every object that lists `properties` and says nothing of
  `additionalProperties` gets `additionalProperties: false`, so a misspelt
  field is an error (as `kubectl --validate=strict` reports it), at the
  root too;
- except where the CRD says `x-kubernetes-preserve-unknown-fields: true`:
  the API server keeps unknown fields there, so they are allowed;
- `format: int-or-string` becomes `oneOf: [string, integer]`.
"""

import json
import sys

import yaml


def convert(node):
    """A copy of the OpenAPI v3 schema `node` as a strict JSON schema."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    out = {key: convert(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: crd2jsonschema.py CRD.yaml VERSION")
    path, wanted = sys.argv[1:]
    with open(path) as f:
        crds = [doc for doc in yaml.safe_load_all(f) if doc and doc.get("kind") == "CustomResourceDefinition"]
    for crd in crds:
        for version in crd["spec"]["versions"]:
            if version["name"] == wanted:
                json.dump(convert(version["schema"]["openAPIV3Schema"]), sys.stdout, indent=2, sort_keys=True)
                sys.stdout.write("\n")
                return
    sys.exit(f"{path}: no CustomResourceDefinition with version {wanted}")


if __name__ == "__main__":
    main()
