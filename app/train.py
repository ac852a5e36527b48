"""Train: configure and launch a training job as a separate process, watch its loss, cancel it. Off unless
NTM_STUDIO_ENABLE_TRAINING=1 (a public Space must not let strangers launch jobs)."""
from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from .figures import loss_curve_figure
from .jobs import SIZES, JobManager, data_folders, hardware
from .widgets import user_errors

OBJECTIVES = {"NTM from scratch": "ntm", "flow matching baseline": "fm", "NTM finetuned from flow matching": "fm_to_ntm",
              "Gaussian-only ablation": "gauss", "self-distilled denoiser for an NTM": "denoiser"}
DATASETS = {"shapes (generated)": "shapes", "MNIST": "mnist", "Fashion-MNIST": "fashion-mnist",
            "my images (zip: images + captions)": "imagefolder"}


def enabled() -> bool:
    return os.environ.get("NTM_STUDIO_ENABLE_TRAINING", "") == "1"


def build(registry, jobs: JobManager | None = None):
    with gr.Tab("Train", id="train"):
        if not enabled():
            gr.Markdown("Training is switched off here (a public Space must not let strangers launch jobs). To train "
                        "your own model: **duplicate this Space** (button at the top) onto your own GPU hardware and "
                        "set the variable `NTM_STUDIO_ENABLE_TRAINING=1`, or run the app locally with it "
                        "(or use `python -m ntm_core.train`, see the README).")
            return None
        jobs = jobs or JobManager()
        gr.Markdown(f"Jobs run as separate processes on **{hardware()}**. A finished job's model appears in the "
                    "model pickers (reload the page).")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                name = gr.Textbox(label="Job name", value="my-ntm")
                objective = gr.Dropdown(list(OBJECTIVES), value="NTM from scratch", label="Objective")
                init_from = gr.Dropdown(registry.choices(), value=None, label="Start from (finetune / denoiser only)")
                dataset = gr.Dropdown(list(DATASETS), value="shapes (generated)", label="Dataset")
                upload = gr.File(label="Images with captions (zip)", file_types=[".zip"], type="filepath")
                folders = list(data_folders())
                data_root = gr.Dropdown(folders, value=folders[0] if folders else None,
                                        label="MNIST / Fashion-MNIST folder (IDX files)",
                                        info="folders this server offers (NTM_STUDIO_DATA)")
                size = gr.Dropdown(list(SIZES), value=list(SIZES)[0], label="Model size")
                with gr.Row():
                    steps = gr.Slider(10, 20000, value=200, step=10, label="Steps")
                    batch = gr.Slider(4, 256, value=32, step=4, label="Batch size")
                launch = gr.Button("Launch", variant="primary")
            with gr.Column(scale=3):
                job = gr.Dropdown(label="Job", choices=list(jobs.jobs()["job"]), allow_custom_value=True)
                state = gr.Markdown()
                curve = gr.Plot()
                log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, autoscroll=True)
                cancel = gr.Button("Cancel job", variant="stop")
        table = gr.Dataframe(label="All jobs", interactive=False)
        timer = gr.Timer(2.0)

        @user_errors
        def start(name, objective, init_from, dataset, upload, data_root, size, steps, batch):
            if objective not in OBJECTIVES or dataset not in DATASETS:
                raise ValueError("pick the objective and the dataset from their lists")
            init = None
            if OBJECTIVES[objective] in ("fm_to_ntm", "denoiser"):
                from .registry import discover

                init = discover().get(init_from)
            job_id = jobs.launch(name=name, dataset=DATASETS[dataset], size=size, steps=int(steps),
                                 objective=OBJECTIVES[objective], batch_size=int(batch), init_from=init,
                                 upload=upload, data_root=data_root or None)
            return gr.Dropdown(choices=list(jobs.jobs()["job"]), value=job_id)

        def watch(job_id):
            table_df = jobs.jobs()
            if not jobs.exists(job_id):  # an id from the list, never a folder path
                return "No job selected.", loss_curve_figure(pd.DataFrame(columns=["step", "loss"])), "", table_df
            st = jobs.state(job_id)
            m = jobs.metrics(job_id)
            last = f" · loss {m['loss'].iloc[-1]:.4f}" if len(m) else ""
            text = (f"**{job_id}**: {st.get('state', 'starting')} · step {st.get('step', 0)}/"
                    f"{st.get('total_steps', '?')}{last} · {st.get('device', hardware())}")
            if st.get("error"):
                text += f"\n\n**Error:** {st['error']}"
            return text, loss_curve_figure(m, job_id), jobs.log_tail(job_id), table_df

        launch.click(start, [name, objective, init_from, dataset, upload, data_root, size, steps, batch], [job],
                     api_name="train")
        cancel.click(user_errors(lambda j: gr.Info(jobs.cancel(j))), [job], None, api_name=False)
        timer.tick(watch, [job], [state, curve, log, table], api_name=False, show_progress="hidden")
        job.change(watch, [job], [state, curve, log, table], api_name=False)
    return init_from
