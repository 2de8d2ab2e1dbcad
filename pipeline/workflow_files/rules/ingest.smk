rule ingest_traces:
    input:
        unpack(batch_inputs),
    output:
        report=f"{OUT}/{{region}}/traces/batches/{{batch}}.json",
    params:
        config_file=CONFIG_FILE,
        paths=batch_paths,
        traces=lambda wildcards: data(wildcards.region, "traces"),
    log:
        f"{OUT}/logs/{{region}}/ingest_traces/{{batch}}.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/ingest_traces/{{batch}}.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: lambda wildcards, input: rule_threads("ingest_traces", input, config)
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("ingest_traces", input, threads, config),
    shell:
        "roadcover ingest -o {params.traces:q} --report {output.report:q} "
        "--workers {threads:q} --config {params.config_file:q} -- {params.paths:q} > {log:q} 2>&1"
