"""Train: configure and launch a training job as a separate process, watch its loss, cancel it. On for a server only
this machine can reach (the quick start's 127.0.0.1); off on a Space or any server others can reach (strangers must
not launch jobs) unless NTM_STUDIO_ENABLE_TRAINING=1. NTM_STUDIO_ENABLE_TRAINING=0 switches it off everywhere."""
from __future__ import annotations

import os
import re

import gradio as gr
import pandas as pd

from .figures import loss_curve_figure
from .jobs import JOB_COLUMNS, JobManager, data_folders, hardware, sizes
from .widgets import user_errors

OBJECTIVES = {"NTM from scratch": "ntm", "flow matching baseline": "fm", "NTM finetuned from flow matching": "fm_to_ntm",
              "Gaussian-only ablation": "gauss", "self-distilled denoiser for an NTM": "denoiser"}
DATASETS = {"shapes (generated)": "shapes", "MNIST": "mnist", "Fashion-MNIST": "fashion-mnist",
            "my images (zip: images + captions)": "imagefolder"}
START_KIND = {"fm_to_ntm": "fm", "denoiser": "ntm"}  # what a finetune / a denoiser starts from
START_DEFAULT = {"fm_to_ntm": "fm-shapes32", "denoiser": "ntm-shapes32"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # a server on these is reachable from this machine only


def enabled() -> bool:
    switch = os.environ.get("NTM_STUDIO_ENABLE_TRAINING", "")
    if switch in ("0", "1"):
        return switch == "1"
    public = bool(os.environ.get("SPACE_ID")) or os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true")
    return not public and os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1") in LOOPBACK  # gradio's own default


def start_picker(registry, objective: str) -> gr.Dropdown:
    """"Start from" for an objective: shown only where it needs a model, listing only the models it can start from."""
    kind = START_KIND.get(OBJECTIVES.get(objective))
    if kind is None:
        return gr.Dropdown(visible=False, value=None)
    choices = registry.choices(kind)
    default = START_DEFAULT[OBJECTIVES[objective]]
    return gr.Dropdown(visible=True, choices=choices, value=default if default in choices else
                       (choices[0] if choices else None))


def data_inputs(dataset: str, folders: list[str]) -> tuple[gr.File, gr.Dropdown]:
    """The upload only for "my images"; the IDX folder only for MNIST / Fashion-MNIST, the one named after it first."""
    kind = DATASETS.get(dataset)
    idx = kind in ("mnist", "fashion-mnist")
    named = [f for f in folders if os.path.basename(f.rstrip("/")).lower() == kind]
    return (gr.File(visible=kind == "imagefolder"),
            gr.Dropdown(choices=folders, visible=idx, value=(named or folders or [None])[0] if idx else None))


def dataset_of(registry, model: str | None, current: str) -> str:
    """The dataset a start model was trained on (its label in DATASETS), else the current choice."""
    try:
        kind = registry.info(model).dataset if model else None
    except ValueError:
        kind = None
    return next((label for label, k in DATASETS.items() if k == kind), current)


def progress_text(job: str, st: dict, m: pd.DataFrame) -> str:
    """One line of a job's progress: state, step of total, loss, throughput and the time left at that pace (read
    from the trainer's metrics, which it writes every log interval; status.json only at checkpoints)."""
    last = m.iloc[-1] if len(m) else None
    step = max(int(st.get("step", 0) or 0), int(last["step"]) if last is not None else 0)
    total = st.get("total_steps")
    parts = [f"**{job}**: {st.get('state', 'starting')}", f"step {step:,}/{total:,}" if total else f"step {step:,}"]
    if total:
        parts[-1] += f" ({100 * step / total:.0f} %)"
    if last is not None and pd.notna(last.get("loss")):
        parts.append(f"loss {last['loss']:.4f}")
    if last is not None and pd.notna(last.get("samples_per_s")):
        parts.append(f"{last['samples_per_s']:,.0f} samples/s")
        running = st.get("state") in (None, "running", "starting")
        if total and step < total and running and pd.notna(last.get("seconds")):
            left = (total - step) * float(last["seconds"])
            parts.append(f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left")
    parts.append(st.get("device", hardware()))
    return " · ".join(parts)


def end_notice(job: str, shown: str | None, st: dict) -> str | None:
    """A pop-up line when the watched job ends: the progress text still on the page (`shown`, the memory between
    ticks) is this job's and was not ended, and its status now is. None otherwise (another job, or already shown)."""
    ended = ("finished", "failed", "stopped")
    before = re.match(r"\*\*(.+?)\*\*: (\w+)", shown or "")
    if not before or before.group(1) != job or before.group(2) in ended or st.get("state") not in ended:
        return None
    if st["state"] == "finished":
        return f"{job} finished: its model, trained: {job}, is in the other tabs' model pickers."
    if st["state"] == "failed":
        return f"{job} failed: {st.get('error') or 'see its log'}."
    return f"{job} stopped at step {st.get('step', '?')}; its last checkpoint is kept."


def build(registry, jobs: JobManager | None = None):
    with gr.Tab("Train", id="train"):
        if not enabled():
            gr.Markdown("Training is switched off here: this server can be reached from other machines, and strangers "
                        "must not launch jobs. To train your own model: **duplicate this Space** (button at the top) "
                        "onto your own GPU hardware and set the variable `NTM_STUDIO_ENABLE_TRAINING=1`, or run "
                        "`python app.py` on your machine (training is on there), or use `python -m ntm_core.train` "
                        "(see the README).")
            return
        jobs = jobs or JobManager()
        gr.Markdown(f"Jobs run as separate processes on **{hardware()}**. A finished job's model appears in the "
                    "other tabs' model pickers as `trained: <job>`.")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                name = gr.Textbox(label="Job name", value="my-ntm")
                objective = gr.Dropdown(list(OBJECTIVES), value="NTM from scratch", label="Objective")
                init_from = gr.Dropdown([], value=None, label="Start from", visible=False,
                                        info="the flow-matching model a finetune starts from / the NTM a denoiser "
                                             "is distilled from")
                dataset = gr.Dropdown(list(DATASETS), value="shapes (generated)", label="Dataset")
                upload = gr.File(label="Images with captions (zip)", file_types=[".zip"], type="filepath",
                                 visible=False)
                folders = list(data_folders())
                data_root = gr.Dropdown(folders, value=None, label="MNIST / Fashion-MNIST folder (IDX files)",
                                        info="folders this server offers (NTM_STUDIO_DATA)", visible=False)
                size = gr.Dropdown(sizes(), value=sizes()[0], label="Model size",
                                   info="the recipe: the bundled models' networks and optimizer "
                                        "(ntm_core/configs/*_fm.yaml); ≈20 min on one H100")
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
        table = gr.Dataframe(jobs.jobs(), label="All jobs", interactive=False, headers=JOB_COLUMNS)
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

        def watch(job_id, shown):
            table_df = jobs.jobs()
            if not jobs.exists(job_id):  # an id from the list, never a folder path
                empty = loss_curve_figure(pd.DataFrame(columns=["step", "loss"]),
                                          empty_note="No job selected: launch one, or pick one in Job.")
                return "No job selected.", empty, "", table_df
            st = jobs.state(job_id)
            m = jobs.metrics(job_id)
            text = progress_text(job_id, st, m)
            notice = end_notice(job_id, shown, st)
            if notice:
                (gr.Warning if st.get("state") == "failed" else gr.Info)(notice)
            if st.get("error"):
                text += f"\n\n**Error:** {st['error']}"
            if st.get("state") == "finished":
                text += f"\n\nIts model is **trained: {job_id}** in the other tabs' model pickers."
            return text, loss_curve_figure(m, job_id), jobs.log_tail(job_id), table_df

        launch.click(start, [name, objective, init_from, dataset, upload, data_root, size, steps, batch], [job],
                     api_name="train")
        cancel.click(user_errors(lambda j: gr.Info(jobs.cancel(j))), [job], None, api_name=False)
        timer.tick(watch, [job, state], [state, curve, log, table], api_name=False, show_progress="hidden")
        job.change(watch, [job, state], [state, curve, log, table], api_name=False)
        objective.change(lambda o: start_picker(registry, o), [objective], [init_from], api_name=False,
                         queue=False)
        dataset.change(lambda d: data_inputs(d, folders), [dataset], [upload, data_root], api_name=False,
                       queue=False)
        init_from.change(lambda m, d: dataset_of(registry, m, d), [init_from, dataset], [dataset], api_name=False,
                         queue=False)
