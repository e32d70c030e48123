rule events:
    input:
        raw_datasets,
        code=sources("events"),
        spikescale=ancient(SPIKESCALE),
    output:
        f"{EVENTS}/train.parquet",
        f"{EVENTS}/test.parquet",
    log:
        f"logs/{DS}/events.log",
    benchmark:
        f"logs/{DS}/events.benchmark.tsv"
    conda:
        "../envs/spikescale.yaml"
    params:
        p=sections("dataset"),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{input.spikescale} events --params {params.p:q} --out-dir {params.out} > {log:q} 2>&1"


rule frames:
    input:
        f"{EVENTS}/train.parquet",
        f"{EVENTS}/test.parquet",
        code=sources("frames"),
        spikescale=ancient(SPIKESCALE),
    output:
        f"{FRAMES}/train.npz",
        f"{FRAMES}/test.npz",
    log:
        f"logs/{DS}/frames.log",
    benchmark:
        f"logs/{DS}/frames.benchmark.tsv"
    conda:
        "../envs/spikescale.yaml"
    params:
        p=sections("frames"),
        events=lambda w, input: os.path.dirname(input[0]),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{input.spikescale} frames --params {params.p:q} --events-dir {params.events} --out-dir {params.out} > {log:q} 2>&1"
