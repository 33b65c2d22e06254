"""Import-linter contract types of Graft's own (``make lint`` puts ``tools/`` on the path).

import-linter's own contracts see an external package as its root only (``ray``, never
``ray._private``), so "only graft.io.ray_compat touches Ray's private API" needs the import
lines themselves.
"""

from __future__ import annotations

import re

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output

# A dotted path into a package's internals: any part with a leading underscore, or an
# implementation path the package documents as internal.
_PRIVATE_PART = re.compile(r"\b{package}(\.\w+)*\.(_\w+)")


class PrivateApiContract(Contract):
    """Only ``allowed_importers`` import a private path of ``package`` (``ray._private``,
    ``ray.train.v2._internal``, or any listed ``internal_paths`` such as ``ray.train.v2``).

    Configuration: ``package`` (an external root package), ``allowed_importers`` (modules),
    ``internal_paths`` (dotted prefixes that count as private although public-looking).
    """

    type_name = "private_api"

    package = fields.StringField()
    allowed_importers = fields.SetField(subfield=fields.StringField(), required=False)
    internal_paths = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        package = str(self.package)
        allowed = {str(m) for m in (self.allowed_importers or set())}
        internal = sorted(str(p) for p in (self.internal_paths or set()))
        private = re.compile(_PRIVATE_PART.pattern.format(package=re.escape(package)))
        violations = []
        for importer in sorted(graph.find_modules_that_directly_import(package)):
            if importer in allowed:
                continue
            for detail in graph.get_import_details(importer=importer, imported=package):
                line = detail["line_contents"]
                if private.search(line) or any(_names_path(line, path) for path in internal):
                    violations.append((importer, detail["line_number"], line))
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, line_number, line in check.metadata["violations"]:
            output.print_error(f"{importer} (l.{line_number}): {line}", bold=False)
            output.new_line()


def _names_path(line: str, path: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(path)}(?![\w])", line) is not None
