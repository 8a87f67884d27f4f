//! Scalar functions Sluice adds to DataFusion.

/// The [`ScalarUDFImpl`](datafusion::logical_expr::ScalarUDFImpl) methods
/// that describe a wrapped DataFusion function (the `ScalarUDF` in field
/// `$inner`) as that function does: its signature, return type and
/// argument coercion. Sluice's wrappers change how it runs, not what it takes.
macro_rules! described_by {
    ($inner:ident) => {
        fn signature(&self) -> &datafusion::logical_expr::Signature {
            self.$inner.signature()
        }

        fn return_type(
            &self,
            arg_types: &[datafusion::arrow::datatypes::DataType],
        ) -> datafusion::common::Result<datafusion::arrow::datatypes::DataType> {
            self.$inner.return_type(arg_types)
        }

        fn return_field_from_args(
            &self,
            args: datafusion::logical_expr::ReturnFieldArgs,
        ) -> datafusion::common::Result<datafusion::arrow::datatypes::FieldRef> {
            self.$inner.return_field_from_args(args)
        }

        fn coerce_types(
            &self,
            arg_types: &[datafusion::arrow::datatypes::DataType],
        ) -> datafusion::common::Result<Vec<datafusion::arrow::datatypes::DataType>> {
            self.$inner.coerce_types(arg_types)
        }
    };
}

pub mod batch_time;
pub mod date_format;
pub mod date_pattern;
#[cfg(test)]
mod invoke_for_tests;
pub mod proctime;
pub mod split_part;
pub mod state_table;
pub mod window;

pub use window::window_udfs;
