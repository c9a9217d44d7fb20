//! Parquet: a document per row, the text in the column named by each key,
//! read batch by batch (only those columns are decoded).

use std::fs::File;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::source::{Halt, Origin, Sink};
use super::{Document, Position, ReadError};

/// Rows decoded at a time.
const BATCH_ROWS: usize = 1024;

pub(crate) fn read_parquet(file: File, origin: &Origin<'_>, sink: &Sink) -> Result<(), Halt> {
    let error = |reason: String| ReadError::Parquet {
        path: origin.file.to_path_buf(),
        reason,
    };
    let file_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| error(e.to_string()))?;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(origin.keys.len());
    for key in origin.keys {
        let index = schema.index_of(key).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            error(format!(
                "no column {key:?}; its columns are: {}",
                names.join(", ")
            ))
        })?;
        roots.push(index);
    }
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| error(e.to_string()))?;

    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| error(format!("after row {row}: {e}")))?;
        let mut columns = Vec::with_capacity(origin.keys.len());
        for key in origin.keys {
            let column = batch
                .column_by_name(key)
                .ok_or_else(|| error(format!("no column {key:?} in a batch")))?;
            check_type(column.data_type()).map_err(|found| {
                error(format!(
                    "column {key:?} holds {found}, expected strings or lists of strings"
                ))
            })?;
            columns.push(column);
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let texts = columns.iter().map(|c| text_at(c, i)).collect();
            sink.emit(Ok(Document {
                texts,
                location: origin.location(Position::Row(row)),
            }))?;
        }
        origin
            .meter
            .advance_to(file_size.saturating_mul(row) / total_rows);
    }
    Ok(())
}

fn check_type(data_type: &DataType) -> Result<(), String> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        DataType::List(item) | DataType::LargeList(item) => match item.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
            other => Err(format!("lists of {other}")),
        },
        other => Err(other.to_string()),
    }
}

/// Row `i` of a column `check_type` accepted; null is empty, a list's
/// strings are joined with "\n\n" as lm_dataformat joins JSON lists.
fn text_at(column: &ArrayRef, i: usize) -> String {
    if column.is_null(i) {
        return String::new();
    }
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => column.as_string_view().value(i).to_string(),
        DataType::List(_) => join(&column.as_list::<i32>().value(i)),
        DataType::LargeList(_) => join(&column.as_list::<i64>().value(i)),
        _ => String::new(),
    }
}

fn join(items: &ArrayRef) -> String {
    (0..items.len())
        .filter(|&j| !items.is_null(j))
        .map(|j| text_at(items, j))
        .collect::<Vec<_>>()
        .join("\n\n")
}
