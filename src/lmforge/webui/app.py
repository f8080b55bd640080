"""The page: Train, Chat and Export tabs (Gradio Blocks), wired to settings, jobs and chat.

Every handler turns an :class:`~lmforge.errors.LmforgeError` into a line on the page; paths
are checked (``paths``) before a tokenizer, model or run touches them.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import pandas as pd
from gradio.blocks import BlockContext
from gradio.components import Component

from lmforge.config import build_config
from lmforge.data.preview import preview_datasets, preview_template, trained_runs
from lmforge.errors import LmforgeError
from lmforge.export import export_model
from lmforge.model.loader import load_tokenizer
from lmforge.templates import list_templates
from lmforge.templates.suggest import proof_of, suggest_template
from lmforge.webui import paths
from lmforge.webui.chat import ChatModel, PageChat, backends, chat_values
from lmforge.webui.form import (
    FORM_DEFAULTS,
    FORM_KEYS,
    check_run,
    dataset_names,
    finetuning_types,
    form_to_values,
    read_config,
    stages,
    to_yaml,
    values_to_form,
)
from lmforge.webui.jobs import Job, JobManager
from lmforge.webui.labels import LABELS, LANGUAGES, label, message, state_label

PREVIEW_SAMPLES = 3
# What gr.update() returns: the properties of a component to change in the page.
Update = dict[str, Any]
# What a chat reply step changes: history shown, message box, attachments, page state, status.
ChatUpdate = tuple[list[dict[str, Any]], str, list[str] | None, PageChat, str]
Labelled = TypeVar("Labelled", bound=Component | BlockContext)

CSS = "mark.trained { background: #b7ebc6; } .preview pre { white-space: pre-wrap; }"


def template_choices() -> list[str]:
    return ["auto"] + [t.name for t in list_templates()]


def _error(exc: Exception, language: str) -> str:
    return message("error", language, message=str(exc))


# ---------------------------------------------------------------- train helpers


def suggest(model: str, language: str) -> tuple[Update, str]:
    """Template dropdown value and the suggestion line for a model folder."""
    if not model.strip():
        return gr.update(), ""
    try:
        folder = paths.tokenizer_folder(model)
        tokenizer = load_tokenizer(build_config({"model_name_or_path": str(folder)}).model)
    except LmforgeError as exc:
        return gr.update(), _error(exc, language)
    found = suggest_template(tokenizer)
    return gr.update(value=found.name), f"{found.name} ({found.proof}): {found.why}"


def describe_template(name: str, shown: str) -> Update | str:
    """The chosen template's proof; a suggestion already naming it (with its reason) stays."""
    if not name or shown.startswith(f"{name} ("):
        return gr.update()
    return f"{name} ({proof_of(name)})"


def preview_html(values: dict[str, Any]) -> str:
    """The first samples of each chosen dataset, trained text in <mark>, everything escaped."""
    config = check_run({**values, "output_dir": values.get("output_dir") or "."}).config
    tokenizer = load_tokenizer(config.model)
    template = preview_template(config, tokenizer)
    parts = []
    for found in preview_datasets(config, tokenizer, template, PREVIEW_SAMPLES):
        parts.append(
            f"<h4>{html.escape(found.split)}: {html.escape(found.name)} "
            f"({html.escape(found.formatting)}, {found.records} records)</h4>"
        )
        for number, sample in enumerate(found.samples):
            body = "".join(
                f'<mark class="trained">{html.escape(text)}</mark>' if trained else html.escape(text)
                for text, trained in trained_runs(tokenizer, sample)
            )
            parts.append(
                f'<p class="sample-head">sample {number}: {len(sample.ids)} tokens, {sample.trained} trained</p>'
                f'<pre class="sample">{body}</pre>'
            )
        parts += [f"<p>{html.escape(line)}</p>" for line in found.dropped]
    return '<div class="preview">' + "".join(parts) + "</div>"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


def job_choices(jobs: JobManager, language: str) -> list[tuple[str, str]]:
    """The job list, newest first: id, state and output folder."""
    return [
        (f"{job.id} · {state_label(job.state(), language)} · {job.output_dir}", job.id)
        for job in reversed(jobs.all())
    ]


def _figure(value: float | None, shape: str) -> str:
    return format(value, shape) if value is not None else "-"


def job_view(job: Job | None, language: str) -> tuple[str, pd.DataFrame, str]:
    """Status line, loss points and log tail of a job."""
    empty = pd.DataFrame({"step": [], "loss": []})
    if job is None:
        return message("no_job", language), empty, ""
    progress = job.progress()
    state = job.state()
    line = message(
        "progress",
        language,
        state=state_label(state, language),
        step=progress.step,
        total=progress.total_steps or "?",
        loss=_figure(progress.loss, ".4f"),
        lr=_figure(progress.learning_rate, ".2e"),
        speed=f"{progress.tokens_per_second or 0:.0f}",
        eta=_seconds(progress.remaining_seconds),
        output_dir=job.output_dir,
    )
    if state == "stopped":
        checkpoint = job.checkpoint()
        line += " · " + (
            message("checkpoint", language, path=checkpoint)
            if checkpoint
            else message("no_checkpoint", language)
        )
    error = job.error()
    if error:
        line += "\n\n" + message("job_error", language, message=error)
    frame = pd.DataFrame(progress.losses, columns=["step", "loss"]) if progress.losses else empty
    return line, frame, job.log_tail()


# ---------------------------------------------------------------- the page


def build_app(workdir: Path, jobs: JobManager | None = None, chat: ChatModel | None = None) -> gr.Blocks:
    jobs = jobs or JobManager(workdir)
    chat = chat or ChatModel()
    labelled: list[tuple[Component | BlockContext, str, str]] = []  # (component, label key, attribute)

    def named(component: Labelled, key: str, attr: str = "label") -> Labelled:
        labelled.append((component, key, attr))
        return component

    def template_picker(key: str, elem_id: str | None = None) -> gr.Dropdown:
        """A template dropdown: the registered names and auto; a name typed in is accepted."""
        picker = gr.Dropdown(
            template_choices(), value="auto", label=label(key, "en"), allow_custom_value=True, elem_id=elem_id
        )
        return named(picker, key)

    with gr.Blocks(title="lmforge", analytics_enabled=False) as app:
        language = gr.State("en")
        with gr.Row():
            named(gr.Markdown(label("title", "en")), "title", "value")
            switch = named(gr.Radio(list(LANGUAGES), value="English", label="Language", scale=0), "language")

        # ------------------------------------------------------------ Train
        with named(gr.Tab(label("tab_train", "en"), elem_id="tab-train"), "tab_train"):
            with gr.Row():
                model = named(
                    gr.Textbox(label=LABELS["model_name_or_path"][0], elem_id="train-model", scale=3),
                    "model_name_or_path",
                )
                template = template_picker("template", "train-template")
                template_status = named(
                    gr.Textbox(
                        label=LABELS["template_status"][0],
                        interactive=False,
                        elem_id="train-template-status",
                        scale=2,
                    ),
                    "template_status",
                )
            trust = named(gr.Checkbox(False, label=LABELS["trust_remote_code"][0]), "trust_remote_code")
            trust_warning = gr.Markdown(visible=False)
            with gr.Row():
                stage = named(
                    gr.Dropdown(stages(), value="sft", label=LABELS["stage"][0], elem_id="train-stage"),
                    "stage",
                )
                kind = named(
                    gr.Radio(finetuning_types(), value="lora", label=LABELS["finetuning_type"][0]),
                    "finetuning_type",
                )
            with gr.Row() as lora_row:
                lora_rank = named(gr.Number(8, precision=0, label=LABELS["lora_rank"][0]), "lora_rank")
                lora_alpha = named(gr.Number(16, precision=0, label=LABELS["lora_alpha"][0]), "lora_alpha")
                lora_target = named(
                    gr.Textbox("all", label=LABELS["lora_target"][0], elem_id="train-lora-target"),
                    "lora_target",
                )
                use_dora = named(gr.Checkbox(False, label=LABELS["use_dora"][0]), "use_dora")
            with gr.Row(visible=False) as freeze_row:
                freeze_layers = named(
                    gr.Number(2, precision=0, label=LABELS["freeze_trainable_layers"][0]),
                    "freeze_trainable_layers",
                )
            with gr.Row():
                dataset_dir = named(
                    gr.Textbox(
                        FORM_DEFAULTS["dataset_dir"],
                        label=LABELS["dataset_dir"][0],
                        elem_id="train-dataset-dir",
                    ),
                    "dataset_dir",
                )
                dataset = named(
                    gr.Dropdown(
                        [], value=[], multiselect=True, label=LABELS["dataset"][0], elem_id="train-dataset"
                    ),
                    "dataset",
                )
                preview_button = named(
                    gr.Button(label("preview", "en"), elem_id="train-preview", scale=0), "preview", "value"
                )
            preview = gr.HTML(elem_id="train-preview-box")
            with gr.Row():
                learning_rate = named(
                    gr.Number(1e-4, label=LABELS["learning_rate"][0], elem_id="train-lr"), "learning_rate"
                )
                epochs = named(gr.Number(3.0, label=LABELS["num_train_epochs"][0]), "num_train_epochs")
                max_steps = named(
                    gr.Number(0, precision=0, label=LABELS["max_steps"][0], elem_id="train-max-steps"),
                    "max_steps",
                )
                batch = named(
                    gr.Number(2, precision=0, label=LABELS["per_device_train_batch_size"][0]),
                    "per_device_train_batch_size",
                )
                accumulation = named(
                    gr.Number(
                        4,
                        precision=0,
                        label=LABELS["gradient_accumulation_steps"][0],
                        elem_id="train-accumulation",
                    ),
                    "gradient_accumulation_steps",
                )
            with gr.Row():
                cutoff = named(
                    gr.Number(1024, precision=0, label=LABELS["cutoff_len"][0], elem_id="train-cutoff"),
                    "cutoff_len",
                )
                packing = named(gr.Checkbox(False, label=LABELS["packing"][0]), "packing")
                bf16 = named(gr.Checkbox(False, label=LABELS["bf16"][0]), "bf16")
                save_steps = named(
                    gr.Number(100, precision=0, label=LABELS["save_steps"][0], elem_id="train-save-steps"),
                    "save_steps",
                )
                logging_steps = named(
                    gr.Number(
                        5, precision=0, label=LABELS["logging_steps"][0], elem_id="train-logging-steps"
                    ),
                    "logging_steps",
                )
                output_dir = named(
                    gr.Textbox(
                        FORM_DEFAULTS["output_dir"],
                        label=LABELS["output_dir"][0],
                        elem_id="train-output-dir",
                        scale=2,
                    ),
                    "output_dir",
                )
            yaml_view = named(
                gr.Code(
                    to_yaml(form_to_values(FORM_DEFAULTS)),
                    language="yaml",
                    label=LABELS["yaml"][0],
                    interactive=False,
                    elem_id="train-yaml",
                ),
                "yaml",
            )
            with gr.Row():
                config_path = named(
                    gr.Textbox(
                        str(workdir / "webui_config.yaml"),
                        label=LABELS["config_path"][0],
                        elem_id="train-config-path",
                        scale=3,
                    ),
                    "config_path",
                )
                save_button = named(
                    gr.Button(label("save_config", "en"), elem_id="train-save"), "save_config", "value"
                )
                load_button = named(
                    gr.Button(label("load_config", "en"), elem_id="train-load"), "load_config", "value"
                )
            with gr.Row():
                start_button = named(
                    gr.Button(label("start", "en"), variant="primary", elem_id="train-start"),
                    "start",
                    "value",
                )
                stop_button = named(
                    gr.Button(label("stop", "en"), variant="stop", elem_id="train-stop"), "stop", "value"
                )
            status = named(
                gr.Textbox(label=LABELS["status"][0], interactive=False, elem_id="train-status"), "status"
            )
            job_list = named(  # jobs an earlier server on this workdir started are listed from the start
                gr.Dropdown(
                    job_choices(jobs, "en"), value=None, label=LABELS["jobs"][0], elem_id="train-jobs"
                ),
                "jobs",
            )
            progress = gr.Markdown(elem_id="train-progress")
            loss_plot = named(
                gr.LinePlot(
                    pd.DataFrame({"step": [], "loss": []}),
                    x="step",
                    y="loss",
                    label=LABELS["loss_plot"][0],
                    elem_id="train-loss-plot",
                    height=260,
                ),
                "loss_plot",
            )
            log_tail = named(
                gr.Textbox(
                    label=LABELS["log_tail"][0],
                    lines=8,
                    max_lines=8,
                    interactive=False,
                    autoscroll=True,
                    elem_id="train-log",
                ),
                "log_tail",
            )
            timer = gr.Timer(1.0)

        # Any: Gradio adds each class its own event methods (.change) at import, unknown to Component
        form: dict[str, Any] = {
            "model_name_or_path": model, "template": template, "trust_remote_code": trust, "stage": stage,
            "finetuning_type": kind, "lora_rank": lora_rank, "lora_alpha": lora_alpha, "lora_target": lora_target,
            "use_dora": use_dora, "freeze_trainable_layers": freeze_layers, "dataset_dir": dataset_dir,
            "dataset": dataset, "learning_rate": learning_rate, "num_train_epochs": epochs, "max_steps": max_steps,
            "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation, "cutoff_len": cutoff,
            "packing": packing, "bf16": bf16, "save_steps": save_steps, "logging_steps": logging_steps,
            "output_dir": output_dir,
        }  # fmt: skip
        assert tuple(form) == FORM_KEYS
        inputs = [form[key] for key in FORM_KEYS]

        def collect(*values: Any) -> dict[str, Any]:
            return form_to_values(dict(zip(FORM_KEYS, values, strict=True)))

        def show_yaml(*values: Any) -> str:
            return to_yaml(collect(*values))

        for component in inputs:
            component.change(show_yaml, inputs, yaml_view, show_progress="hidden")

        model.submit(suggest, [model, language], [template, template_status])
        model.blur(suggest, [model, language], [template, template_status])
        template.change(describe_template, [template, template_status], template_status)

        def on_trust(ticked: bool, lang: str) -> Update:
            if ticked:
                gr.Warning(message("remote_code_warning", lang))
            return gr.update(visible=ticked, value="⚠️ " + message("remote_code_warning", lang))

        trust.change(on_trust, [trust, language], trust_warning)
        kind.change(
            lambda k: (gr.update(visible=k == "lora"), gr.update(visible=k == "freeze")),
            kind,
            [lora_row, freeze_row],
        )

        def on_dataset_dir(folder: str, chosen: list[str], lang: str) -> tuple[Update, str]:
            try:
                names = dataset_names(folder)
            except LmforgeError as exc:
                return gr.update(choices=[], value=[]), _error(exc, lang)
            return gr.update(choices=names, value=[n for n in chosen or [] if n in names]), ""

        dataset_dir.submit(on_dataset_dir, [dataset_dir, dataset, language], [dataset, status])
        dataset_dir.blur(on_dataset_dir, [dataset_dir, dataset, language], [dataset, status])

        async def on_preview(*values: Any) -> tuple[str, str]:
            *fields, lang = values
            try:
                return await asyncio.to_thread(preview_html, collect(*fields)), ""
            except LmforgeError as exc:
                return "", _error(exc, lang)

        preview_button.click(on_preview, [*inputs, language], [preview, status])

        def on_save(path: str, *values: Any) -> str:
            *fields, lang = values
            target = Path(path.strip()).expanduser() if path.strip() else None
            if target is None or target.suffix.lower() not in (".yaml", ".yml") or target.is_dir():
                return _error(ValueError("config file: enter a path ending in .yaml"), lang)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.with_name(f".{target.name}.tmp")
            staging.write_text(to_yaml(collect(*fields)), encoding="utf-8")
            staging.replace(target)
            return message("saved", lang, path=target)

        save_button.click(on_save, [config_path, *inputs, language], status)

        def on_load(path: str, lang: str) -> list[Update | str]:
            try:
                values, ignored = values_to_form(read_config(path))
            except LmforgeError as exc:
                return [gr.update() for _ in FORM_KEYS] + [_error(exc, lang)]
            note = message("loaded", lang, path=path)
            if ignored:
                note += message("ignored", lang, keys=", ".join(ignored))
            updates: list[Update | str] = []
            for key in FORM_KEYS:
                if key == "dataset":
                    updates.append(gr.update(choices=sorted(set(values[key])), value=values[key]))
                else:
                    updates.append(gr.update(value=values[key]))
            return updates + [note]

        load_button.click(on_load, [config_path, language], [*inputs, status])

        def on_start(*values: Any) -> tuple[str, Update]:
            *fields, lang = values
            try:
                run = check_run(collect(*fields))
            except LmforgeError as exc:
                return _error(exc, lang), gr.update()
            job = jobs.start(run)
            return (
                message("started", lang, id=job.id, output_dir=job.output_dir),
                gr.update(choices=job_choices(jobs, lang), value=job.id),
            )

        start_button.click(on_start, [*inputs, language], [status, job_list])

        def on_stop(job_id: str | None, lang: str) -> str:
            job = jobs.get(job_id)
            if job is None:
                return message("no_job", lang)
            job.stop()
            return message("stop_sent", lang)

        stop_button.click(on_stop, [job_list, language], status)

        def refresh(job_id: str | None, lang: str) -> tuple[Update, str, pd.DataFrame, str]:
            job = jobs.get(job_id)
            if job is not None:  # keep the selection: a tick still in flight must not undo a new one
                return (gr.update(choices=job_choices(jobs, lang)), *job_view(job, lang))
            job = jobs.latest()  # a fresh page (or a second tab) attaches to the newest running job
            return (
                gr.update(choices=job_choices(jobs, lang), value=job.id if job else None),
                *job_view(job, lang),
            )

        timer.tick(
            refresh, [job_list, language], [job_list, progress, loss_plot, log_tail], show_progress="hidden"
        )
        job_list.input(refresh, [job_list, language], [job_list, progress, loss_plot, log_tail])
        app.load(refresh, [job_list, language], [job_list, progress, loss_plot, log_tail])

        # ------------------------------------------------------------ Chat
        with named(gr.Tab(label("tab_chat", "en"), elem_id="tab-chat"), "tab_chat"):
            with gr.Row():
                chat_model = named(
                    gr.Textbox(label=LABELS["chat_model"][0], elem_id="chat-model", scale=3), "chat_model"
                )
                chat_adapter = named(
                    gr.Textbox(label=LABELS["chat_adapter"][0], elem_id="chat-adapter", scale=3),
                    "chat_adapter",
                )
                chat_template = template_picker("chat_template", "chat-template")
                backend = named(
                    gr.Radio(backends(), value="huggingface", label=LABELS["backend"][0]), "backend"
                )
            chat_trust = named(gr.Checkbox(False, label=LABELS["trust_remote_code"][0]), "trust_remote_code")
            with gr.Row():
                load_model = named(
                    gr.Button(label("load_model", "en"), variant="primary", elem_id="chat-load"),
                    "load_model",
                    "value",
                )
                unload_model = named(
                    gr.Button(label("unload_model", "en"), elem_id="chat-unload"), "unload_model", "value"
                )
                chat_status = named(
                    gr.Textbox(
                        label=LABELS["chat_status"][0], interactive=False, elem_id="chat-status", scale=3
                    ),
                    "chat_status",
                )
            with gr.Row():
                system = named(
                    gr.Textbox(label=LABELS["system"][0], elem_id="chat-system", scale=3), "system"
                )
                max_new_tokens = named(
                    gr.Slider(1, 2048, value=64, step=1, label=LABELS["max_new_tokens"][0]), "max_new_tokens"
                )
            chatbot = named(
                gr.Chatbot(label=LABELS["chatbot"][0], elem_id="chat-history", height=320), "chatbot"
            )
            with gr.Row():
                user_text = named(
                    gr.Textbox(label=LABELS["message"][0], elem_id="chat-message", scale=4), "message"
                )
                send = named(
                    gr.Button(label("send", "en"), variant="primary", elem_id="chat-send", scale=0),
                    "send",
                    "value",
                )
                clear = named(
                    gr.Button(label("clear", "en"), elem_id="chat-clear", scale=0), "clear", "value"
                )
            attach = named(
                gr.File(
                    file_count="multiple", type="filepath", label=LABELS["attach"][0], elem_id="chat-attach"
                ),
                "attach",
            )
            chat_page = gr.State(PageChat())

        chat_trust.change(on_trust, [chat_trust, language], trust_warning)

        chat_model.blur(suggest, [chat_model, language], [chat_template, chat_status])
        chat_model.submit(suggest, [chat_model, language], [chat_template, chat_status])

        async def on_load_model(
            path: str, adapter: str, name: str, engine: str, trusted: bool, lang: str
        ) -> str:
            try:
                loaded = await chat.load(chat_values(path, adapter, name, engine, trusted))
            except LmforgeError as exc:
                return _error(exc, lang)
            return message("model_loaded", lang, name=loaded)

        load_model.click(
            on_load_model,
            [chat_model, chat_adapter, chat_template, backend, chat_trust, language],
            chat_status,
        )

        async def on_unload(lang: str) -> str:
            await chat.unload()
            return ""

        unload_model.click(on_unload, language, chat_status)

        async def on_send(
            text: str, files: list[str] | None, page: PageChat, prompt: str, limit: float, lang: str
        ) -> AsyncIterator[ChatUpdate]:
            if not text.strip():
                yield page.shown, text, files, page, ""
                return
            try:
                async for shown, kept in chat.stream(page, text, prompt, int(limit), files or []):
                    yield shown, "", None, kept, ""
            except (LmforgeError, ValueError, OSError) as exc:
                yield page.shown, text, files, page, _error(exc, lang)

        chat_inputs = [user_text, attach, chat_page, system, max_new_tokens, language]
        chat_outputs = [chatbot, user_text, attach, chat_page, chat_status]
        send.click(on_send, chat_inputs, chat_outputs)
        user_text.submit(on_send, chat_inputs, chat_outputs)
        clear.click(lambda: ([], PageChat(), None), None, [chatbot, chat_page, attach])

        # ------------------------------------------------------------ Export
        with named(gr.Tab(label("tab_export", "en"), elem_id="tab-export"), "tab_export"):
            with gr.Row():
                export_base = named(
                    gr.Textbox(label=LABELS["export_model"][0], elem_id="export-model"), "export_model"
                )
                export_adapter = named(
                    gr.Textbox(label=LABELS["export_adapter"][0], elem_id="export-adapter"), "export_adapter"
                )
                export_template = template_picker("export_template")
            with gr.Row():
                export_dir = named(
                    gr.Textbox(label=LABELS["export_dir"][0], elem_id="export-dir", scale=3), "export_dir"
                )
                export_size = named(gr.Number(5, precision=0, label=LABELS["export_size"][0]), "export_size")
                export_trust = named(
                    gr.Checkbox(False, label=LABELS["trust_remote_code"][0]), "trust_remote_code"
                )
            export_button = named(
                gr.Button(label("export", "en"), variant="primary", elem_id="export-run"), "export", "value"
            )
            export_status = named(
                gr.Textbox(label=LABELS["export_status"][0], interactive=False, elem_id="export-status"),
                "export_status",
            )

        export_trust.change(on_trust, [export_trust, language], trust_warning)

        async def on_export(
            base: str, adapter: str, name: str, folder: str, size: float, trusted: bool, lang: str
        ) -> str:
            try:
                values = chat_values(base, adapter, name, "huggingface", trusted)
                values.pop("infer_backend")
                values["export_dir"] = str(paths.output_folder(folder, "export folder"))
                values["export_size"] = int(size or 5)
                written = await asyncio.to_thread(export_model, build_config(values))
            except LmforgeError as exc:
                return _error(exc, lang)
            return message("exported", lang, path=written)

        export_button.click(
            on_export,
            [export_base, export_adapter, export_template, export_dir, export_size, export_trust, language],
            export_status,
        )

        # ------------------------------------------------------------ language
        def relabel(choice: str) -> list[Update | str]:
            lang = LANGUAGES.get(choice, "en")
            updates: list[Update | str] = [lang]
            for _component, key, attr in labelled:
                change: Update = {attr: label(key, lang)}
                updates.append(gr.update(**change))
            return updates

        switch.change(relabel, switch, [language, *[c for c, _, _ in labelled]])
    return app
