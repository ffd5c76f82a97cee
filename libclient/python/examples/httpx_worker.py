import asyncio, os, sys
import httpx, tollgate

URL = os.environ.get("IMAGES_URL", "https://api.openai.com/v1/images/generations")
KEY = os.environ.get("TOLLGATE_KEY", "openai/gpt-image-1")

async def generate(tg, http, prompt):
    for _ in range(5):       # RETRY: the host pauses as the server said; aticket waits
        async with tg.aticket(KEY, requests=1, images=1, tokens=5000) as t:
            r = await http.post(URL, json={"model": "gpt-image-1", "prompt": prompt})
            advice = t.observe(r.status_code, r.headers)
            if advice is tollgate.Advice.OK:
                t.settle(tokens=r.json()["usage"]["total_tokens"])
                return r.json()
            if advice is tollgate.Advice.GIVE_UP:
                r.raise_for_status()
    raise RuntimeError(f"{prompt!r}: still rate-limited after 5 tries")

async def main(prompts):
    auth = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
    with tollgate.open() as tg:      # $TOLLGATE_SEGMENT, else "tollgate"
        async with httpx.AsyncClient(headers=auth, timeout=300) as http:
            images = await asyncio.gather(*(generate(tg, http, p) for p in prompts))
    print(f"{len(images)} images")

asyncio.run(main(sys.argv[1:] or ["a lighthouse at dusk"]))
