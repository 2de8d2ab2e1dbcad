rule match_traces:
    input:
        roads=rules.build_roads.output.meta,
        report=rules.ingest_traces.output.report,
    output:
        meta=f"{OUT}/{{region}}/matched/{{batch}}/meta.json",
    params:
        config_file=CONFIG_FILE,
        roads=lambda wildcards, input: str(Path(input.roads).parent),
        traces=lambda wildcards: f"{OUT}/{wildcards.region}/traces",
        folder=lambda wildcards, output: str(Path(output.meta).parent),
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
