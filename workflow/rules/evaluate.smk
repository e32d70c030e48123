rule evaluate:
    input:
        snn=f"{MODELS}/snn.pt",
        events=f"{EVENTS}/test.parquet",
        code=sources("evaluate"),
        spikescale=ancient(SPIKESCALE),
    output:
        [f"{RESULTS}/scale/factor_{{factor}}{part}.parquet" for part in FACTOR_PARTS],
    log:
        f"logs/{DS}/evaluate/factor_{{factor}}.log",
    benchmark:
        f"logs/{DS}/evaluate/factor_{{factor}}.benchmark.tsv"
    conda:
        "../envs/spikescale.yaml"
    threads: 1
    resources:
        gpu=GPU,
    params:
        p=sections(
            "evaluation", "device", "hardware", frames=["downsample"], training=["polarities"]
        ),
        prefix=lambda w, output: output[0].removesuffix(".parquet"),
    shell:
        "{input.spikescale} evaluate --params {params.p:q} --snn {input.snn} --events {input.events}"
        " --factor {wildcards.factor} --out-prefix {params.prefix} --threads {threads} > {log:q} 2>&1"


rule refine:
    # one job, whatever refine_rounds says, so Snakemake and DVC keep the same static DAG
    input:
        factors=expand(
            f"{RESULTS}/scale/factor_{{factor}}{{part}}.parquet", factor=FACTORS, part=FACTOR_PARTS
        ),
        snn=f"{MODELS}/snn.pt",
        events=f"{EVENTS}/test.parquet",
        code=sources("refine"),
        spikescale=ancient(SPIKESCALE),
    output:
        [f"{RESULTS}/refined{part}.parquet" for part in FACTOR_PARTS],
    log:
        f"logs/{DS}/refine.log",
    conda:
        "../envs/spikescale.yaml"
    threads: 1
    resources:
        gpu=GPU,
    params:
        p=sections(
            "scale",
            "recommend",
            "evaluation",
            "device",
            "hardware",
            frames=["downsample"],
            training=["polarities"],
        ),
        factor_dir=lambda w, input: os.path.dirname(input.factors[0]),
        prefix=lambda w, output: output[0].removesuffix(".parquet"),
    shell:
        "{input.spikescale} refine --params {params.p:q} --snn {input.snn} --events {input.events}"
        " --factor-dir {params.factor_dir} --out-prefix {params.prefix} --threads {threads} > {log:q} 2>&1"


rule collect:
    input:
        # the explicit list of this run's factors: a removed factor leaves no stale row
        factors=expand(
            f"{RESULTS}/scale/factor_{{factor}}{{part}}.parquet", factor=FACTORS, part=FACTOR_PARTS
        ),
        refined=[f"{RESULTS}/refined{part}.parquet" for part in FACTOR_PARTS],
        training=f"{MODELS}/training.json",
        snn=f"{MODELS}/snn.pt",
        events=f"{EVENTS}/test.parquet",
        code=sources("collect"),
        spikescale=ancient(SPIKESCALE),
    output:
        SWEEP,
        f"{RESULTS}/layers.parquet",
        f"{RESULTS}/timecourse.parquet",
        f"{RESULTS}/samples.parquet",
        f"{RESULTS}/recommendation.json",
        f"{RESULTS}/metrics.json",
    log:
        f"logs/{DS}/collect.log",
    conda:
        "../envs/spikescale.yaml"
    params:
        p=sections(*PARAMS),
        factor_dir=lambda w, input: os.path.dirname(input.factors[0]),
        refined=lambda w, input: input.refined[0].removesuffix(".parquet"),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{input.spikescale} collect --params {params.p:q} --factor-dir {params.factor_dir} --training {input.training}"
        " --refine-prefix {params.refined} --snn {input.snn} --events {input.events} --out-dir {params.out}"
        " > {log:q} 2>&1"
