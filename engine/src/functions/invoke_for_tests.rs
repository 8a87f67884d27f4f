//! Calling a scalar function in unit tests as DataFusion's executor does.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};

/// Call `f` on `args` over `rows` rows: the argument fields come from the
/// values' types and the return field from `f.return_type`.
pub(crate) fn invoke(f: &dyn ScalarUDFImpl, args: Vec<ColumnarValue>, rows: usize) -> ArrayRef {
    let types: Vec<DataType> = args.iter().map(ColumnarValue::data_type).collect();
    let arg_fields = types.iter().map(|t| Arc::new(Field::new("a", t.clone(), true))).collect();
    let returned = f.return_type(&types).expect("return type");
    let args = ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows: rows,
        return_field: Arc::new(Field::new("r", returned, true)),
        config_options: Arc::new(ConfigOptions::default()),
    };
    f.invoke_with_args(args).expect("invoke").into_array(rows).expect("array")
}
