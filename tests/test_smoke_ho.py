def test_health_and_token(ho_stack, photo_factory):
    ho = ho_stack("smoke")
    ho.import_dir(photo_factory(3, min_kb=20, max_kb=40, mean_kb=30))
    store_id, _ = ho.add_store()
    s = ho.session(store_id)
    page = s.get(f"{ho.api}/sync/product-photos/").json()
    assert page["total"] == 3
