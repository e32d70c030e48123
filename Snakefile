# spikescale: how far must the first layer of a converted SNN be scaled up?
# Run with `make run`, or `snakemake --profile profiles/default`.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"


validate(config, "workflow/schemas/params.schema.json")


include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        SWEEP,
        PLOTS,
        NIR,
