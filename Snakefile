# roadcover workflow: OSM extract -> roads -> (simulated fleet) -> ingest -> snap -> coverage -> export.
# Run it with `roadcover run` or `snakemake --cores N [--configfile FILE] [--profile configs/profiles/local]`.
from snakemake.utils import min_version, validate

min_version("9.0")


# the demo config only when none is given (--configfile): Snakemake would merge its keys in
if not workflow.overwrite_configfiles:

    configfile: "configs/demo.yaml"



validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


include: "workflow/rules/common.smk"
include: "workflow/rules/roads.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/snap.smk"
include: "workflow/rules/coverage.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        expand(f"{OUT}/{{region}}/export/web/index.html", region=REGIONS),
        expand(f"{OUT}/{{region}}/export/releases/latest.json", region=REGIONS),
        f"{OUT}/report.html",
