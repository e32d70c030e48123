rule train:
    input:
        f"{FRAMES}/train.npz",
        f"{FRAMES}/test.npz",
        network_sources,
        events=f"{EVENTS}/test.parquet",
        code=sources("train"),
        spikescale=ancient(SPIKESCALE),
    output:
        model=f"{MODELS}/cnn.pt",
        report=f"{MODELS}/training.json",
    log:
        f"logs/{DS}/train.log",
    benchmark:
        f"logs/{DS}/train.benchmark.tsv"
    conda:
        "../envs/spikescale.yaml"
    threads: 2
    resources:
        gpu=GPU,
    params:
        p=sections("training", "device", "model", "dataset"),
        frames=lambda w, input: os.path.dirname(input[0]),
    shell:
        "{input.spikescale} train --params {params.p:q} --frames-dir {params.frames} --events {input.events}"
        " --out {output.model} --report {output.report} --threads {threads} > {log:q} 2>&1"


rule normalise:
    input:
        cnn=f"{MODELS}/cnn.pt",
        frames=f"{FRAMES}/train.npz",
        code=sources("normalise"),
        spikescale=ancient(SPIKESCALE),
    output:
        model=f"{MODELS}/cnn_normalised.pt",
        table=f"{MODELS}/normalisation.json",
    log:
        f"logs/{DS}/normalise.log",
    conda:
        "../envs/spikescale.yaml"
    threads: 2
    params:
        p=sections(
            "normalisation",
            "dataset",
            conversion=["max_pool"],
            training=["input"],
        ),
    shell:
        "{input.spikescale} normalise --params {params.p:q} --cnn {input.cnn} --frames {input.frames}"
        " --out {output.model} --table {output.table} --threads {threads} > {log:q} 2>&1"


rule convert:
    input:
        cnn=f"{MODELS}/cnn_normalised.pt",
        frames=f"{FRAMES}/train.npz",
        code=sources("convert"),
        spikescale=ancient(SPIKESCALE),
    output:
        snn=f"{MODELS}/snn.pt",
        summary=f"{MODELS}/snn_layers.json",
    log:
        f"logs/{DS}/convert.log",
    conda:
        "../envs/spikescale.yaml"
    params:
        p=sections("conversion", evaluation=["time_bin_us"]),
    shell:
        "{input.spikescale} convert --params {params.p:q} --cnn {input.cnn} --frames {input.frames}"
        " --out {output.snn}"
        " --summary {output.summary} > {log:q} 2>&1"
