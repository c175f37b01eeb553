//! `jiff::Timestamp` <-> `timestamptz` without an extra crate: Postgres stores microseconds
//! since 2000-01-01, which sqlx exposes for `time`/`chrono` only; we go through text.

use jiff::Timestamp;
use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef},
    Decode, Encode, Postgres, Type,
};

/// A timestamp as Postgres `timestamptz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub Timestamp);

const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("timestamptz")
    }
}

impl PgHasArrayType for Ts {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("_timestamptz")
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let micros = self.0.as_microsecond() - PG_EPOCH_UNIX_SECS * 1_000_000;
        <i64 as Encode<Postgres>>::encode_by_ref(&micros, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let micros = <i64 as Decode<Postgres>>::decode(value)?;
                Ok(Ts(Timestamp::from_microsecond(
                    micros + PG_EPOCH_UNIX_SECS * 1_000_000,
                )?))
            }
            PgValueFormat::Text => {
                let s = <&str as Decode<Postgres>>::decode(value)?;
                Ok(Ts(s.replace(' ', "T").parse::<Timestamp>()?))
            }
        }
    }
}
