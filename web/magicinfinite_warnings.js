// Shows the pack's warnings ("magicinfinite.warning" websocket events) as toasts in the ComfyUI
// frontend, so a silent voice, a downscaled huge portrait or a face fallback is seen where the user
// looks, not only in the server console. The same text is in the node's output ("warnings").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
  name: "MagicInfinite.Warnings",
  setup() {
    api.addEventListener("magicinfinite.warning", (event) => {
      const { node, node_type, messages } = event.detail || {};
      for (const text of messages || []) {
        const summary = `MagicInfinite${node_type ? " " + node_type : ""}${node ? " #" + node : ""}`;
        if (app.extensionManager?.toast?.add) {
          app.extensionManager.toast.add({ severity: "warn", summary, detail: text, life: 15000 });
        } else {
          console.warn(summary + ": " + text);
        }
      }
    });
  },
});
