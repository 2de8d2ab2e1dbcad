rule compute_coverage:
    input:
        roads=rules.build_roads.output.meta,
        matched=matched_batches,
    output:
        summary=f"{OUT}/{{region}}/coverage/summary.json",
    params:
        config_file=CONFIG_FILE,
        roads=lambda wildcards: data(wildcards.region, "roads"),
        matched=lambda wildcards: repeated_option(
            "--matched",
            [data(wildcards.region, "matched", name) for name in batch_names(wildcards.region)],
        ),
        folder=lambda wildcards: data(wildcards.region, "coverage"),
        record=lambda wildcards: record(wildcards.region, "coverage", "summary.json"),
    log:
        f"{OUT}/logs/{{region}}/compute_coverage.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/compute_coverage.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("compute_coverage", input, threads, config),
    shell:
        "roadcover coverage --roads {params.roads:q} {params.matched:q} -o {params.folder:q} "
        "--config {params.config_file:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.summary:q}; fi"
