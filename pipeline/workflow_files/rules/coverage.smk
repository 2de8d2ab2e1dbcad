rule compute_coverage:
    input:
        roads=rules.build_roads.output.meta,
        matched=matched_batches,
    output:
        summary=f"{OUT}/{{region}}/coverage/summary.json",
    params:
        config_file=CONFIG_FILE,
        roads=lambda wildcards, input: str(Path(input.roads).parent),
        matched=lambda wildcards, input: repeated_option(
            "--matched", [Path(meta).parent for meta in input.matched]
        ),
        folder=lambda wildcards, output: str(Path(output.summary).parent),
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
