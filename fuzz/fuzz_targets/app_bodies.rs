//! The app's request bodies on any bytes, through the same deserialisation (and, for users and
//! orders, the same validation) as its handlers: users (create, update), tasks, orders.
#![no_main]

use app::store::{CreateUserRequest, NewUser, UpdateUserRequest, UserPatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<CreateUserRequest>(data) {
        let _ = NewUser::try_from(r);
    }
    if let Ok(r) = serde_json::from_slice::<UpdateUserRequest>(data) {
        let _ = UserPatch::try_from(r);
    }
    let _ = serde_json::from_slice::<app::tasks::TaskRequest>(data);
    if let Ok(r) = serde_json::from_slice::<app::orders::OrderRequest>(data) {
        let _ = app::orders::validate_sku(&r.sku);
    }
});
