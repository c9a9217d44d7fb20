//! The GPT-NeoX model and training loop in Burn.
