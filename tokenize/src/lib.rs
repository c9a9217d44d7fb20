//! GPT-NeoX tokenizers and the parallel ordered streaming encoder.
