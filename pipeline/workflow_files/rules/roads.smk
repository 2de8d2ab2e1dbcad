rule build_roads:
    output:
        meta=f"{OUT}/{{region}}/roads/meta.json",
    params:
        config_file=CONFIG_FILE,
        osm=lambda wildcards: region_settings(wildcards.region)["osm"],
        folder=lambda wildcards: data(wildcards.region, "roads"),
        record=lambda wildcards: record(wildcards.region, "roads", "meta.json"),
    log:
        f"{OUT}/logs/{{region}}/build_roads.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/build_roads.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: build_roads_mem_mb(region_settings(wildcards.region)["osm"], config),
    shell:
        "roadcover roads build -o {params.folder:q} --config {params.config_file:q} "
        "-- {params.osm:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.meta:q}; fi"


rule simulate_fleet:
    input:
        roads=rules.build_roads.output.meta,
    output:
        meta=f"{OUT}/{{region}}/fleet/simulation.json",
    params:
        config_file=CONFIG_FILE,
        roads=lambda wildcards: data(wildcards.region, "roads"),
        folder=lambda wildcards: data(wildcards.region, "fleet"),
        record=lambda wildcards: record(wildcards.region, "fleet", "simulation.json"),
    log:
        f"{OUT}/logs/{{region}}/simulate_fleet.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/simulate_fleet.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: lambda wildcards, input: rule_threads("simulate_fleet", input, config)
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("simulate_fleet", input, threads, config),
    # --overwrite: the rule owns its fleet folder; a rerun replaces the earlier simulation
    shell:
        "roadcover simulate --roads {params.roads:q} -o {params.folder:q} --overwrite "
        "--workers {threads:q} --config {params.config_file:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.meta:q}; fi"
