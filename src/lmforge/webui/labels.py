"""The page's labels in English and Chinese (the language switch swaps every one of them)."""

from __future__ import annotations

LANGUAGES = {"English": "en", "中文": "zh"}

LABELS: dict[str, tuple[str, str]] = {
    "title": ("# lmforge: fine-tune, watch, chat, export", "# lmforge：微调、监控、对话、导出"),
    "language": ("Language", "语言"),
    "tab_train": ("Train", "训练"),
    "tab_chat": ("Chat", "对话"),
    "tab_export": ("Export", "导出"),
    "model_name_or_path": ("Model folder", "模型文件夹"),
    "template": ("Chat template", "对话模板"),
    "template_status": ("Template suggestion", "模板建议"),
    "trust_remote_code": (
        "Trust remote code (runs Python shipped with the model)",
        "信任远程代码（会运行模型附带的 Python 代码）",
    ),
    "stage": ("Stage", "训练阶段"),
    "finetuning_type": ("Finetuning type", "微调方法"),
    "lora_rank": ("LoRA rank", "LoRA 秩"),
    "lora_alpha": ("LoRA alpha", "LoRA 缩放系数 alpha"),
    "lora_target": ("LoRA target modules", "LoRA 作用模块"),
    "use_dora": ("DoRA", "使用 DoRA"),
    "freeze_trainable_layers": ("Trainable layers (freeze)", "可训练层数（冻结微调）"),
    "dataset_dir": ("Dataset folder (with dataset_info.json)", "数据集文件夹（含 dataset_info.json）"),
    "dataset": ("Datasets", "数据集"),
    "preview": ("Preview samples", "预览样本"),
    "preview_box": (
        "Samples as the model sees them (trained tokens marked)",
        "模型看到的样本（标出参与训练的词元）",
    ),
    "learning_rate": ("Learning rate", "学习率"),
    "num_train_epochs": ("Epochs", "训练轮数"),
    "max_steps": ("Max steps (0: use epochs)", "最大步数（0 表示按轮数）"),
    "per_device_train_batch_size": ("Batch size per device", "每个设备的批大小"),
    "gradient_accumulation_steps": ("Gradient accumulation", "梯度累积步数"),
    "cutoff_len": ("Cutoff length", "截断长度"),
    "packing": ("Packing", "序列打包"),
    "bf16": ("bf16", "bf16 混合精度"),
    "save_steps": ("Save every N steps", "每 N 步保存"),
    "logging_steps": ("Log every N steps", "每 N 步记录日志"),
    "output_dir": ("Output folder", "输出文件夹"),
    "yaml": ("The YAML that will run", "将要运行的 YAML"),
    "config_path": ("Config file", "配置文件"),
    "save_config": ("Save config", "保存配置"),
    "load_config": ("Load config", "加载配置"),
    "start": ("Start", "开始训练"),
    "stop": ("Stop", "停止"),
    "status": ("Status", "状态"),
    "jobs": ("Jobs (output folders)", "任务（输出文件夹）"),
    "progress": ("Progress", "进度"),
    "loss_plot": ("Training loss", "训练损失"),
    "log_tail": ("Log", "日志"),
    "chat_model": ("Model folder", "模型文件夹"),
    "chat_adapter": ("Adapter folder (optional)", "适配器文件夹（可选）"),
    "chat_template": ("Chat template", "对话模板"),
    "backend": ("Backend", "推理后端"),
    "load_model": ("Load model", "加载模型"),
    "unload_model": ("Unload", "卸载模型"),
    "chat_status": ("Model", "模型"),
    "system": ("System prompt", "系统提示词"),
    "max_new_tokens": ("Max new tokens", "最大生成长度"),
    "chatbot": ("Conversation", "对话"),
    "message": ("Message", "消息"),
    "send": ("Send", "发送"),
    "clear": ("Clear", "清空历史"),
    "attach": (
        "Pictures, sounds or videos for the next message (multimodal models)",
        "随下一条消息发送的图片、音频或视频（多模态模型）",
    ),
    "export_model": ("Base model folder", "基座模型文件夹"),
    "export_adapter": ("Adapter folder", "适配器文件夹"),
    "export_template": ("Chat template saved with the model", "随模型保存的对话模板"),
    "export_dir": ("Export folder", "导出文件夹"),
    "export_size": ("Shard size (GB)", "分片大小（GB）"),
    "export": ("Merge and export", "合并并导出"),
    "export_status": ("Export", "导出结果"),
}

MESSAGES: dict[str, tuple[str, str]] = {
    "remote_code_warning": (
        "Trust remote code is on: loading this model runs Python code from its folder. Tick it only for models you trust.",
        "已开启信任远程代码：加载模型时会运行其文件夹中的 Python 代码。只对可信的模型开启。",
    ),
    "started": ("Started job {id}; it writes to {output_dir}", "已启动任务 {id}，输出到 {output_dir}"),
    "stop_sent": (
        "Stop sent: the run saves a checkpoint after this step",
        "已发送停止信号：本步结束后保存检查点",
    ),
    "no_job": ("No job yet", "还没有任务"),
    "saved": ("Saved {path}", "已保存 {path}"),
    "loaded": ("Loaded {path}", "已加载 {path}"),
    "ignored": ("; keys the form does not show were left out: {keys}", "；表单没有的键未载入：{keys}"),
    "model_loaded": ("Loaded {name}", "已加载 {name}"),
    "exported": ("Wrote {path}", "已写入 {path}"),
    "error": ("Error: {message}", "错误：{message}"),
    "progress": (
        "**{state}** · step {step}/{total} · loss {loss} · lr {lr} · {speed} tokens/s · ETA {eta} · `{output_dir}`",
        "**{state}** · 步数 {step}/{total} · 损失 {loss} · 学习率 {lr} · {speed} 词元/秒 · 预计剩余 {eta} · `{output_dir}`",
    ),
    "job_error": ("**error:** {message}", "**错误：** {message}"),
    "checkpoint": ("checkpoint: `{path}`", "检查点：`{path}`"),
    "no_checkpoint": (
        "no checkpoint: it stopped before its first step",
        "没有检查点：在第一步之前就已停止",
    ),
}

# The job states (jobs.STATES) as the page shows them.
STATE_LABELS: dict[str, tuple[str, str]] = {
    "running": ("running", "运行中"),
    "stopping": ("stopping", "正在停止"),
    "finished": ("finished", "已完成"),
    "stopped": ("stopped", "已停止"),
    "failed": ("failed", "失败"),
}


def label(key: str, language: str) -> str:
    en, zh = LABELS[key]
    return zh if language == "zh" else en


def message(key: str, language: str, **values: object) -> str:
    en, zh = MESSAGES[key]
    return (zh if language == "zh" else en).format(**values)


def state_label(state: str, language: str) -> str:
    en, zh = STATE_LABELS[state]
    return zh if language == "zh" else en
