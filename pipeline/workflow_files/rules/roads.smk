rule build_roads:
    output:
        meta=f"{OUT}/{{region}}/roads/meta.json",
    wildcard_constraints:
        region=names_pattern(UNSHARDED),
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


# A sharded region (its `shards:` set): cut the extract, build each shard in a job of its own,
# then write the region's tables from the shards' owned edges (docs/workflow.md, "Sharded regions").
# Under a storage plugin each job stages what it reads and writes (pipeline/roads/shard_build.py:
# stage_shard, stage_merge) and the rule fetches its commit record, as for the other stages.
checkpoint cut_roads:
    output:
        plan=f"{OUT}/{{region}}/roads/shards/plan.json",
    wildcard_constraints:
        region=names_pattern(SHARDED),
    params:
        config_file=CONFIG_FILE,
        osm=lambda wildcards: region_settings(wildcards.region)["osm"],
        resolution=lambda wildcards: region_settings(wildcards.region)["shards"],
        folder=lambda wildcards: data(wildcards.region, "roads"),
        record=lambda wildcards: record(wildcards.region, "roads", "shards", "plan.json"),
    log:
        f"{OUT}/logs/{{region}}/cut_roads.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/cut_roads.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: int(config["roads"]["shard_max_job_mem_mb"]),
    shell:
        "roadcover roads cut -o {params.folder:q} --shard-resolution {params.resolution:q} "
        "--config {params.config_file:q} -- {params.osm:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.plan:q}; fi"


rule build_road_shard:
    input:
        plan=rules.cut_roads.output.plan,
    output:
        meta=f"{OUT}/{{region}}/roads/shards/{{cell}}/meta.json",
    wildcard_constraints:
        region=names_pattern(SHARDED),
        cell="[0-9a-f]{15}",
    params:
        config_file=CONFIG_FILE,
        folder=lambda wildcards: data(wildcards.region, "roads"),
        record=lambda wildcards: record(
            wildcards.region, "roads", "shards", wildcards.cell, "meta.json"
        ),
    log:
        f"{OUT}/logs/{{region}}/build_road_shard/{{cell}}.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/build_road_shard/{{cell}}.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: int(config["roads"]["shard_max_job_mem_mb"]),
    shell:
        "roadcover roads build-shard --config {params.config_file:q} "
        "-- {params.folder:q} {wildcards.cell:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.meta:q}; fi"


rule merge_road_shards:
    input:
        shard_metas,
    output:
        meta=f"{OUT}/{{region}}/roads/meta.json",
    wildcard_constraints:
        region=names_pattern(SHARDED),
    params:
        config_file=CONFIG_FILE,
        folder=lambda wildcards: data(wildcards.region, "roads"),
        record=lambda wildcards: record(wildcards.region, "roads", "meta.json"),
    log:
        f"{OUT}/logs/{{region}}/merge_road_shards.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/merge_road_shards.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: int(config["roads"]["shard_max_job_mem_mb"]),
    shell:
        "roadcover roads merge --config {params.config_file:q} -- {params.folder:q} > {log:q} 2>&1"
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
