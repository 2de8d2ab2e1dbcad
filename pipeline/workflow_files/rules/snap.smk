rule match_traces:
    input:
        roads=rules.build_roads.output.meta,
        report=rules.ingest_traces.output.report,
    output:
        meta=f"{OUT}/{{region}}/matched/{{batch}}/meta.json",
    params:
        config_file=CONFIG_FILE,
        roads=lambda wildcards: data(wildcards.region, "roads"),
        traces=lambda wildcards: data(wildcards.region, "traces"),
        folder=lambda wildcards: data(wildcards.region, "matched", wildcards.batch),
        record=lambda wildcards: record(wildcards.region, "matched", wildcards.batch, "meta.json"),
    log:
        f"{OUT}/logs/{{region}}/match_traces/{{batch}}.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/match_traces/{{batch}}.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: lambda wildcards, input: rule_threads("match_traces", input, config)
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("match_traces", input, threads, config),
    shell:
        "roadcover snap --roads {params.roads:q} --traces {params.traces:q} "
        "--batch-report {input.report:q} -o {params.folder:q} --workers {threads:q} "
        "--config {params.config_file:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.meta:q}; fi"
