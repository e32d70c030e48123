rule report:
    input:
        SWEEP,
        f"{RESULTS}/layers.parquet",
        f"{RESULTS}/timecourse.parquet",
        code=sources("report"),
        spikescale=ancient(SPIKESCALE),
    output:
        report(PLOTS[0], caption="../report/accuracy.rst", category="Sweep"),
        report(PLOTS[1], caption="../report/pareto.rst", category="Sweep"),
        report(PLOTS[2], caption="../report/layer_rates.rst", category="Layers"),
        report(PLOTS[3], caption="../report/timecourse.rst", category="Latency"),
        f"{RESULTS}/plots/sweep.csv",
        f"{RESULTS}/plots/timecourse.csv",
    log:
        f"logs/{DS}/report.log",
    conda:
        "../envs/spikescale.yaml"
    params:
        results=lambda w, input: os.path.dirname(input[0]),
        plots=lambda w, output: os.path.dirname(output[0]),
    shell:
        "{input.spikescale} report --results-dir {params.results} --out-dir {params.plots} > {log:q} 2>&1"


rule export:
    input:
        snn=f"{MODELS}/snn.pt",
        recommendation=f"{RESULTS}/recommendation.json",
        code=sources("export"),
        spikescale=ancient(SPIKESCALE),
    output:
        nir=NIR,
        chip=NIR_CHIP,
    log:
        f"logs/{DS}/export.log",
    conda:
        "../envs/spikescale.yaml"
    shell:
        "{input.spikescale} export --snn {input.snn} --recommendation {input.recommendation} --out {output.nir}"
        " --chip-out {output.chip} > {log:q} 2>&1"
