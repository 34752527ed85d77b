//! Schemas of the OpenAPI document that no Rust type of the API derives by itself.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// An IPv4 or IPv6 address as text (`std::net::IpAddr` on the wire): fields of that type say
/// `#[schema(value_type = IpAddress)]`.
pub struct IpAddress;

impl PartialSchema for IpAddress {
    fn schema() -> RefOr<Schema> {
        let text = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        OneOfBuilder::new()
            .item(text(KnownFormat::Ipv4))
            .item(text(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address"))
            .examples([
                serde_json::json!("10.77.0.11"),
                serde_json::json!("fd00::11"),
            ])
            .into()
    }
}

impl ToSchema for IpAddress {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("IpAddress")
    }
}
