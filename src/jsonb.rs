//! jsonb arguments kept as PostgreSQL's own values.
//!
//! pgrx's `JsonB` converts every argument to a `serde_json::Value` before the function
//! runs, and panics (SQLSTATE XX000) on JSON that serde_json refuses, such as arrays nested
//! deeper than 128 levels. `Jsonb` keeps the datum: metadata is passed on to SQL as it came,
//! without a round trip, and only what pg_quota reads (limits, batches) is parsed, with a
//! 22023 error instead of a panic.

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::pgrx_sql_entity_graph::metadata::{ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin};
use pgrx::{FromDatum, IntoDatum, PgMemoryContexts};

use crate::error::{raise, QResult, QuotaError};

/// A non-NULL jsonb value, valid for the duration of the SQL call that received or made it.
#[derive(Debug, Clone, Copy)]
pub struct Jsonb(Datum);

impl Jsonb {
    /// A jsonb read from JSON text by jsonb's own input function, exactly as a jsonb
    /// argument is read (e.g. one event's metadata in record_batch).
    pub fn from_text(text: &str) -> QResult<Self> {
        let text = std::ffi::CString::new(text).map_err(|_| QuotaError::invalid("JSON text contains a NUL byte"))?;
        // SAFETY: jsonb_in reads a NUL-terminated C string, alive for the call, and returns a
        // palloc'd jsonb in the current memory context.
        unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(Datum::from(text.as_ptr()))]) }
            .map(Jsonb)
            .ok_or_else(|| QuotaError::internal("jsonb_in returned NULL"))
    }

    /// The value as JSON text (jsonb's own output). jsonb_out runs in a memory context of its
    /// own, deleted once the text is copied: what it allocates along the way (one string per
    /// number, for one) is not left in the caller's context for the rest of a long call.
    pub fn text(self) -> QResult<String> {
        let mut scratch = PgMemoryContexts::new("pg_quota jsonb_out");
        // SAFETY: self.0 is a jsonb datum alive for this call; jsonb_out detoasts it and
        // returns a C string in the scratch context, copied before the context is deleted.
        unsafe {
            scratch.switch_to(|_| {
                let out = pgrx::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(self.0)])
                    .ok_or_else(|| QuotaError::internal("jsonb_out returned NULL"))?;
                Ok(CStr::from_ptr(out.cast_mut_ptr::<std::ffi::c_char>()).to_string_lossy().into_owned())
            })
        }
    }

    /// The value, parsed; `what` names the argument in the error.
    pub fn parse(self, what: &str) -> QResult<serde_json::Value> {
        serde_json::from_str(&self.text()?).map_err(|error| {
            QuotaError::invalid(format!("{what} cannot be read: {error}"))
                .with_hint("JSON nested more than 128 levels deep is not accepted.")
        })
    }
}

impl FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(datum: Datum, is_null: bool, _typoid: Oid) -> Option<Self> {
        (!is_null).then_some(Jsonb(datum))
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<Datum> {
        Some(self.0)
    }

    fn type_oid() -> Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: the argument is a jsonb datum, which is all FromDatum reads.
unsafe impl<'fcx> ArgAbi<'fcx> for Jsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // Only a non-STRICT function with a non-Option jsonb argument gets here with a NULL
        // (every jsonb argument of pg_quota's is an Option): even then a 22004, not an XX000.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| raise(QuotaError::null_argument("a jsonb argument")))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: maps to SQL's jsonb, the type FromDatum and IntoDatum handle.
unsafe impl SqlTranslatable for Jsonb {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::Jsonb");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}
