// Shows a stitch .ply (OpenCV world frame: x right, y down, z forward; photo camera = identity) in
// PlayCanvas or @mkkellogg/gaussian-splats-3d with the photo camera's pinhole intrinsics, and exposes
//   window.__state             'loading' | 'ready' | 'error: ...'
//   window.setBackground(r, g, b) -> Promise, resolves after a few frames drawn on that background
// so that a driver can screenshot the page on black and on white.
const q = new URLSearchParams(location.search);
const viewer = q.get('viewer');
const ply = q.get('ply'); // the scene's URL: a .ply, or for mkkellogg also a .splat or .spz (`format`)
const format = q.get('format') || 'ply';
const W = parseInt(q.get('w'), 10);
const H = parseInt(q.get('h'), 10);
const fy = parseFloat(q.get('fy'));
// Both viewers take a vertical field of view and a centred principal point; stitch's cameras are centred.
const vfovDeg = (2 * Math.atan(H / 2 / fy) * 180) / Math.PI;
window.__state = 'loading';

const frames = (n) =>
  new Promise((resolve) => {
    const step = () => (n-- <= 0 ? resolve() : requestAnimationFrame(step));
    requestAnimationFrame(step);
  });

async function playcanvas() {
  const pc = await import('playcanvas');
  const canvas = document.createElement('canvas');
  canvas.width = W;
  canvas.height = H;
  canvas.style.width = `${W}px`;
  canvas.style.height = `${H}px`;
  document.body.appendChild(canvas);
  const app = new pc.Application(canvas, {
    graphicsDeviceOptions: { antialias: false, alpha: false, preserveDrawingBuffer: true, deviceTypes: ['webgl2'] },
  });
  app.graphicsDevice.maxPixelRatio = 1;
  app.setCanvasFillMode(pc.FILLMODE_NONE, W, H);
  app.setCanvasResolution(pc.RESOLUTION_FIXED, W, H);
  app.start();
  const camera = new pc.Entity('camera');
  camera.addComponent('camera', { fov: vfovDeg, nearClip: 0.01, farClip: 1000, clearColor: new pc.Color(0, 0, 0, 1) });
  app.root.addChild(camera); // at the origin, looking down -z, y up
  const asset = await new Promise((resolve, reject) => {
    app.assets.loadFromUrl(ply, 'gsplat', (err, a) => (err ? reject(new Error(err)) : resolve(a)));
  });
  const splat = new pc.Entity('splat');
  splat.addComponent('gsplat', { asset });
  splat.setLocalEulerAngles(180, 0, 0); // OpenCV (x, y, z) -> (x, -y, -z): in front of the camera, upright
  app.root.addChild(splat);
  window.setBackground = async (r, g, b) => {
    camera.camera.clearColor = new pc.Color(r, g, b, 1);
    await frames(8);
  };
}

async function mkkellogg() {
  const THREE = await import('three');
  const GS = await import('@mkkellogg/gaussian-splats-3d');
  const renderer = new THREE.WebGLRenderer({ antialias: false, alpha: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(W, H);
  document.body.appendChild(renderer.domElement);
  const camera = new THREE.PerspectiveCamera(vfovDeg, W / H, 0.01, 1000);
  camera.position.set(0, 0, 0);
  camera.up.set(0, -1, 0); // OpenCV axes directly: looking down +z with y down
  camera.lookAt(0, 0, 1);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0, 0, 0);
  const splats = new GS.DropInViewer({
    sharedMemoryForWorkers: false, // no cross-origin isolation on this little server
    gpuAcceleratedSort: false,
    sceneRevealMode: GS.SceneRevealMode.Instant,
    logLevel: GS.LogLevel.None,
  });
  scene.add(splats);
  const sceneFormat = { ply: GS.SceneFormat.Ply, splat: GS.SceneFormat.Splat, spz: GS.SceneFormat.Spz }[format];
  await splats.addSplatScene(ply, { format: sceneFormat, showLoadingUI: false, progressiveLoad: false });
  let running = true;
  const loop = () => {
    if (!running) return;
    renderer.render(scene, camera);
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
  window.setBackground = async (r, g, b) => {
    scene.background = new THREE.Color().setRGB(r, g, b, THREE.SRGBColorSpace);
    await frames(8);
  };
  window.stop = () => (running = false);
}

(viewer === 'playcanvas' ? playcanvas() : viewer === 'mkkellogg' ? mkkellogg() : Promise.reject(new Error(`unknown viewer ${viewer}`)))
  .then(() => frames(4))
  .then(() => (window.__state = 'ready'))
  .catch((e) => (window.__state = `error: ${e && e.stack ? e.stack : e}`));
