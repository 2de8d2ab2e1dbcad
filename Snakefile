# `snakemake` from the repository root: the workflow itself is package data of roadcover
# (pipeline/workflow_files/Snakefile, the one `roadcover run` uses), so an installed wheel has it.
include: "pipeline/workflow_files/Snakefile"


# an included file's default target does not carry over: its target, the default here too
rule default:
    default_target: True
    input:
        rules.all.input,
