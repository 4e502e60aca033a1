//! `docs/openapi.yaml` is the contract: it parses as OpenAPI 3.1 and names exactly the routes
//! the bridge serves.

use std::collections::BTreeSet;

use shared::app::routes::ROUTES;

fn spec() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("docs/openapi.yaml exists")).expect("the spec is YAML")
}

#[test]
fn the_spec_is_openapi_3_1() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."), "{:?}", spec["openapi"]);
    assert!(spec["components"]["schemas"]["Error"].is_mapping(), "the error contract is described");
}

#[test]
fn the_spec_and_the_route_table_name_the_same_routes() {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
    let spec = spec();
    let in_spec: BTreeSet<(String, String)> = spec["paths"]
        .as_mapping()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().unwrap().to_owned();
            item.as_mapping()
                .unwrap()
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| METHODS.contains(k))
                .map(move |method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served: BTreeSet<(String, String)> =
        ROUTES.iter().map(|route| (route.method.to_string(), route.template.to_owned())).collect();
    assert_eq!(in_spec, served);
}
