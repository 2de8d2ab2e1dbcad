rule export_tiles:
    input:
        summary=rules.compute_coverage.output.summary,
        roads=rules.build_roads.output.meta,
    output:
        tiles=f"{OUT}/{{region}}/export/coverage.pmtiles",
    params:
        coverage=lambda wildcards: data(wildcards.region, "coverage"),
        roads=lambda wildcards: data(wildcards.region, "roads"),
    log:
        f"{OUT}/logs/{{region}}/export_tiles.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/export_tiles.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("export_tiles", input, threads, config),
    shell:
        "roadcover export tiles --roads {params.roads:q} -- {params.coverage:q} {output.tiles:q} "
        "> {log:q} 2>&1"


rule export_priorities:
    input:
        summary=rules.compute_coverage.output.summary,
        roads=rules.build_roads.output.meta,
    output:
        # summary.json is written last: the folder's commit record
        summary=f"{OUT}/{{region}}/export/priorities/summary.json",
    params:
        coverage=lambda wildcards: data(wildcards.region, "coverage"),
        roads=lambda wildcards: data(wildcards.region, "roads"),
        folder=lambda wildcards: data(wildcards.region, "export", "priorities"),
        record=lambda wildcards: record(wildcards.region, "export", "priorities", "summary.json"),
        config_file=CONFIG_FILE,
    log:
        f"{OUT}/logs/{{region}}/export_priorities.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/export_priorities.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb(
            "export_priorities", input, threads, config
        ),
    shell:
        "roadcover export priorities --roads {params.roads:q} -o {params.folder:q} "
        "--config {params.config_file:q} -- {params.coverage:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.summary:q}; fi"


rule export_viewer:
    input:
        summary=rules.compute_coverage.output.summary,
        tiles=rules.export_tiles.output.tiles,
        priorities=rules.export_priorities.output.summary,
    output:
        index=f"{OUT}/{{region}}/export/web/index.html",
    params:
        coverage=lambda wildcards: data(wildcards.region, "coverage"),
        tiles=lambda wildcards: data(wildcards.region, "export", "coverage.pmtiles"),
        priorities=lambda wildcards: data(wildcards.region, "export", "priorities"),
        folder=lambda wildcards: data(wildcards.region, "export", "web"),
        record=lambda wildcards: record(wildcards.region, "export", "web", "index.html"),
    log:
        f"{OUT}/logs/{{region}}/export_viewer.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/export_viewer.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("export_viewer", input, threads, config),
    shell:
        "roadcover export viewer --priorities {params.priorities:q} "
        "-- {params.coverage:q} {params.tiles:q} {params.folder:q} "
        "> {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.index:q}; fi"


rule export_feed:
    input:
        summary=rules.compute_coverage.output.summary,
        roads=rules.build_roads.output.meta,
    output:
        # update(): Snakemake must not delete the pointer before the job runs, the stage reads it
        # to find the previous release and write the delta against it
        latest=update(f"{OUT}/{{region}}/export/releases/latest.json"),
    params:
        coverage=lambda wildcards: data(wildcards.region, "coverage"),
        roads=lambda wildcards: data(wildcards.region, "roads"),
        releases=lambda wildcards: data(wildcards.region, "export", "releases"),
        latest=lambda wildcards: data(wildcards.region, "export", "releases", "latest.json"),
        record=lambda wildcards: record(wildcards.region, "export", "releases", "latest.json"),
        config_file=CONFIG_FILE,
    log:
        f"{OUT}/logs/{{region}}/export_feed.log",
    benchmark:
        f"{OUT}/benchmarks/{{region}}/export_feed.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("export_feed", input, threads, config),
    shell:
        "roadcover export feed --roads {params.roads:q} -o {params.releases:q} "
        "--latest {params.latest:q} --config {params.config_file:q} -- {params.coverage:q} "
        "> {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.latest:q}; fi"


rule write_report:
    input:
        summaries=expand(f"{OUT}/{{region}}/coverage/summary.json", region=REGIONS),
        viewers=expand(f"{OUT}/{{region}}/export/web/index.html", region=REGIONS),
        priorities=expand(f"{OUT}/{{region}}/export/priorities/summary.json", region=REGIONS),
    output:
        report=f"{OUT}/report.html",
    params:
        regions=[data(region) for region in REGIONS],
        report=lambda wildcards: data("report.html"),
        record=lambda wildcards: record("report.html"),
    log:
        f"{OUT}/logs/write_report.log",
    benchmark:
        f"{OUT}/benchmarks/write_report.tsv"
    conda:
        "../envs/roadcover.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input, threads: rule_mem_mb("write_report", input, threads, config),
    shell:
        "roadcover report -o {params.report:q} -- {params.regions:q} > {log:q} 2>&1"
        " && if [ x{params.record:q} != x ]; then roadcover storage get -- {params.record:q} {output.report:q}; fi"
