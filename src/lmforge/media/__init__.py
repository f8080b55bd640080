"""Media for multimodal models: decoding, placeholder counts and model inputs, shared by data, train and infer."""
