rule events:
    output:
        f"{EVENTS}/train.parquet",
        f"{EVENTS}/test.parquet",
    params:
        p=sections("dataset"),
        out=EVENTS,
    log:
        f"logs/{DS}/events.log",
    benchmark:
        f"logs/{DS}/events.benchmark.tsv"
    shell:
        "spikescale events --params {params.p:q} --out-dir {params.out} > {log:q} 2>&1"


rule frames:
    input:
        f"{EVENTS}/train.parquet",
        f"{EVENTS}/test.parquet",
    output:
        f"{FRAMES}/train.npz",
        f"{FRAMES}/test.npz",
    params:
        p=sections("frames"),
        events=EVENTS,
        out=FRAMES,
    log:
        f"logs/{DS}/frames.log",
    shell:
        "spikescale frames --params {params.p:q} --events-dir {params.events} --out-dir {params.out} > {log:q} 2>&1"
